"""The ExifTool each web process keeps running: it survives the thread that started it, is started again
when it died, and one that hangs is stopped after its time limit, the photo still stored without its
position."""

from __future__ import annotations

import io
import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from predictions import metadata
from predictions.uploads import check_image_upload
from tests.conftest import astronaut_portrait


def located_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0110] = "Phone 15"
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 30.0)})
    buffer = io.BytesIO()
    Image.fromarray(astronaut_portrait()).save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def stored_exif(data: bytes) -> Image.Exif:
    with Image.open(io.BytesIO(data)) as kept:
        return kept.getexif()


def test_exiftool_outlives_the_thread_that_started_it_and_comes_back_after_dying():
    photo = located_jpeg()
    results: list[bytes | None] = []
    started = threading.Thread(
        target=lambda: results.append(check_image_upload(SimpleUploadedFile("a.jpg", photo)).converted)
    )
    started.start()
    started.join()
    first = metadata._tool
    assert first is not None and first.process.poll() is None  # alive after its thread ended

    first.process.kill()
    first.process.wait()
    again = check_image_upload(SimpleUploadedFile("b.jpg", photo)).converted

    assert metadata._tool is not first and metadata._tool.process.poll() is None
    for converted in (results[0], again):
        assert converted is not None and converted.startswith(photo[:2])
        assert 0x8825 not in stored_exif(converted) and stored_exif(converted)[0x0110] == "Phone 15"


def test_an_exiftool_that_hangs_is_stopped_and_the_photo_converted(settings, tmp_path, monkeypatch):
    hangs = tmp_path / "exiftool"
    hangs.write_text("#!/bin/sh\nexec sleep 600\n")
    hangs.chmod(0o755)
    settings.AGEGENDER_EXIFTOOL = str(hangs)
    monkeypatch.setattr(metadata, "TIMEOUT", 1)

    checked = check_image_upload(SimpleUploadedFile("c.jpg", located_jpeg()))

    assert metadata._tool.process.poll() is not None  # stopped, not left waiting
    assert checked.extension == "jpg" and 0x8825 not in stored_exif(checked.converted)
    assert stored_exif(checked.converted)[0x0110] == "Phone 15"


@pytest.mark.parametrize("missing", ["/nonexistent/exiftool"])
def test_the_check_says_when_exiftool_is_missing(settings, missing):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.AGEGENDER_EXIFTOOL = missing
    with pytest.raises(SystemCheckError, match="ExifTool was not found"):
        call_command("check", fail_level="WARNING")
