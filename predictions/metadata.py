"""Photo metadata through ExifTool: where a photo was taken is removed, and a file cut short is told.

ExifTool (Perl, `libimage-exiftool-perl`) rewrites the metadata of every format we accept, HEIC and AVIF
included (libexiv2 only reads those), copying the compressed picture byte for byte, and it parses
untrusted files in its own process, in a memory-safe language. One ExifTool per web process is kept
running (`-stay_open`): a photo then costs a few milliseconds instead of a Perl start (~0.2 s).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import exiftool
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from exiftool.exceptions import ExifToolException

#: What is removed: the EXIF GPS IFD, the XMP copy of the position, and the EXIF thumbnail (a small
#: copy of the picture as it was before any crop or edit).
LOCATION_TAGS = ("-gps:all=", "-xmp-exif:gps*=", "-ifd1:all=")


class MetadataError(RuntimeError):
    """ExifTool is missing, or could not read or write this file."""


_lock = threading.Lock()
_tool: exiftool.ExifToolHelper | None = None
_tool_key: tuple[int, str] = (0, "")  # the process and the executable it was started for


def _execute(*params: str) -> str:
    """Run one ExifTool command in this process's ExifTool (started on first use, and again after a fork
    or a crash); one command at a time, since the commands share its pipes."""
    global _tool, _tool_key
    key = (os.getpid(), settings.AGEGENDER_EXIFTOOL)
    with _lock:
        try:
            if _tool is None or _tool_key != key or not _tool.running:
                _tool = exiftool.ExifToolHelper(executable=key[1], common_args=["-n"])
                _tool.run()
                _tool_key = key
            return _tool.execute(*params)
        except (ExifToolException, OSError, ValueError) as exc:
            if _tool is not None and isinstance(exc, OSError | ExifToolException) and not _tool.running:
                _tool = None
            raise MetadataError(str(exc) or type(exc).__name__) from exc


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
    if "created" not in message:  # "1 image files copied": there was nothing to remove
        return None
    return out.read_bytes()
