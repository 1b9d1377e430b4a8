"""Photo metadata through ExifTool: where a photo was taken is removed, and a file cut short is told.

ExifTool (Perl, `libimage-exiftool-perl`) rewrites the metadata of every format we accept, HEIC and AVIF
included (libexiv2 only reads those), copying the compressed picture byte for byte, and it parses
untrusted files in a process of its own, in a memory-safe language, under a time limit.

Each web process keeps one ExifTool running (`-stay_open`, commands on its standard input, each answered
up to `{ready}`): a photo then costs milliseconds, where starting Perl for each takes 0.1-0.3 s. Not
PyExifTool: its ExifTool dies with the thread that started it (a threaded server's request), and it
waits forever on one that died.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

#: What is removed: the EXIF GPS IFD, the XMP copy of the position, and the EXIF thumbnail (a small
#: copy of the picture as it was before any crop or edit).
LOCATION_TAGS = ("-gps:all=", "-xmp-exif:gps*=", "-ifd1:all=")
#: Seconds one ExifTool command may take (a 15 MB photo takes well under one); past it, it is stopped.
TIMEOUT = 20
_READY = b"{ready}"


class MetadataError(RuntimeError):
    """ExifTool is missing, or could not read or write this file, or took too long."""


class _ExifTool:
    """One running ExifTool; its answers and messages come on one pipe."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.pid = os.getpid()
        try:
            self.process = subprocess.Popen(
                [executable, "-stay_open", "True", "-@", "-", "-common_args", "-n"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise MetadataError(f"ExifTool cannot be started ({exc})") from exc

    def run(self, params: tuple[str, ...]) -> str:
        try:
            self.process.stdin.write("".join(f"{param}\n" for param in (*params, "-execute")).encode())
            self.process.stdin.flush()
        except OSError as exc:
            self.stop()
            raise MetadataError(f"ExifTool stopped ({exc})") from exc
        answer, deadline, pipe = b"", time.monotonic() + TIMEOUT, self.process.stdout.fileno()
        while not answer.rstrip().endswith(_READY):
            if not select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
                self.stop()
                raise MetadataError(f"ExifTool took more than {TIMEOUT} s")
            chunk = os.read(pipe, 65536)
            if not chunk:
                self.stop()
                raise MetadataError("ExifTool stopped")
            answer += chunk
        return answer.rstrip()[: -len(_READY)].decode(errors="replace")

    def serves(self, executable: str) -> bool:
        return self.executable == executable and self.process.poll() is None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


_lock = threading.Lock()
_tool: _ExifTool | None = None


def _execute(*params: str) -> str:
    """One ExifTool command, in this process's ExifTool (started on first use, and again after a fork, a
    failure or a change of `AGEGENDER_EXIFTOOL`); one command at a time, since they share its pipes."""
    global _tool
    with _lock:
        current, executable = _tool, settings.AGEGENDER_EXIFTOOL
        if current is None or current.pid != os.getpid() or not current.serves(executable):
            if current is not None and current.pid == os.getpid():
                current.stop()
            _tool = current = _ExifTool(executable)
        return current.run(params)


@atexit.register
def _stop() -> None:
    if _tool is not None and _tool.pid == os.getpid():
        _tool.stop()


def available() -> bool:
    return shutil.which(settings.AGEGENDER_EXIFTOOL) is not None


@contextmanager
def on_disk(upload: UploadedFile) -> Iterator[Path]:
    """The upload as a file in a folder of our own (ExifTool works on files; it reads the type inside)."""
    with tempfile.TemporaryDirectory(prefix="agegender-") as folder:
        path = Path(folder) / "in"
        upload.seek(0)
        with path.open("wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        upload.seek(0)
        yield path


def truncated(path: Path) -> bool:
    """Whether ExifTool finds the file cut short: a box, chunk or segment that runs past its end."""
    lines = _execute("-validate", "-warning", "-error", "-a", "-s", "-s", "-s", str(path))
    return "truncated" in lines.lower()


def without_location(path: Path) -> bytes | None:
    """The file without where it was taken (`LOCATION_TAGS`), everything else kept as it is; None when it
    had none of them. Raises MetadataError where ExifTool cannot rewrite the file."""
    out = path.with_name("out")
    message = _execute(*LOCATION_TAGS, "-o", str(out), str(path))
    if "1 image files created" in message:
        return out.read_bytes()
    if "1 image files copied" in message:  # there was nothing to remove
        return None
    raise MetadataError(message.strip() or "ExifTool wrote nothing")
