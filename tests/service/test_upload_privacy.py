"""Where a photo was taken is not stored: the GPS position goes, nothing else changes (ExifTool)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from predictions.models import Prediction
from tests.conftest import stored_files
from tests.service.test_uploads import jpeg, post_files

pytestmark = pytest.mark.django_db


def phone_exif(*, orientation: int = 6) -> Image.Exif:
    """EXIF as a phone writes it: the camera, the time, which way up, and where the photo was taken."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Phone maker", "Phone 15", orientation  # make, model, turn
    exif.get_ifd(0x8769)[0x9003] = "2026:11:28 09:30:00"  # when (the Exif IFD's DateTimeOriginal)
    gps = exif.get_ifd(0x8825)  # where: 48°51'30" N, 2°17'40" E
    gps.update({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return exif


def test_where_a_photo_was_taken_is_not_stored_and_nothing_else_changes(client, private_media):
    """A phone's JPEG carries its GPS position. The stored photo keeps every pixel, the orientation, the
    camera and the time, byte for byte the same compressed picture, but not the position."""

    import numpy as np
    from PIL import Image

    from tests.conftest import astronaut_portrait

    buffer = io.BytesIO()
    turned = Image.fromarray(astronaut_portrait()).transpose(Image.Transpose.ROTATE_90)
    turned.save(buffer, format="JPEG", quality=90, exif=phone_exif().tobytes())
    original = buffer.getvalue()
    with Image.open(io.BytesIO(original)) as sent:
        assert sent.getexif().get_ifd(0x8825)[2] == (48.0, 51.0, 30.0)  # the test photo does carry it

    assert post_files(client, jpeg("IMG_0043.JPG", original)).status_code == 302
    prediction = Prediction.objects.get()
    stored = b"".join(client.get(f"/p/{prediction.id}/original/").streaming_content)

    with Image.open(io.BytesIO(stored)) as kept, Image.open(io.BytesIO(original)) as sent:
        exif = kept.getexif()
        assert 0x8825 not in exif and exif.get_ifd(0x8825) == {}
        assert (exif[0x010F], exif[0x0110], exif[0x0112]) == ("Phone maker", "Phone 15", 6)
        assert exif.get_ifd(0x8769)[0x9003] == "2026:11:28 09:30:00"
        assert np.array_equal(np.asarray(kept), np.asarray(sent))  # every pixel as sent
    scan = original.index(b"\xff\xda")  # the compressed picture, from its start of scan to the end
    assert stored.endswith(original[scan:]) and len(stored) < len(original)
    assert (prediction.image_width, prediction.image_height) == (384, 512)  # upright, as before
    assert b"Phone maker" in stored and stored_files(private_media) == [private_media / prediction.image.name]


def phone_heic(exif: Image.Exif) -> bytes:

    from pillow_heif import register_heif_opener

    from tests.conftest import astronaut_portrait

    register_heif_opener()
    buffer = io.BytesIO()
    Image.fromarray(astronaut_portrait()).save(buffer, format="HEIF", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", [1, 6])
def test_an_iphone_photo_loses_its_position_and_nothing_else(client, private_media, orientation, monkeypatch):
    """ExifTool removes the GPS entries from a HEIC's EXIF without decoding the photo: the stored file
    keeps the compressed picture byte for byte, the camera and the time; only the position is gone."""

    import numpy as np
    from pillow_heif import as_plugin

    sent = phone_heic(phone_exif(orientation=orientation))
    with Image.open(io.BytesIO(sent)) as photo:
        assert photo.getexif().get_ifd(0x8825)[2] == (48.0, 51.0, 30.0)  # the test photo does carry it
        sent_size, sent_pixels = photo.size, np.asarray(photo)
    exif_at = sent.index(b"\x00\x00\x00\x06Exif\x00\x00")  # the EXIF item, after the picture here
    picture = sent[sent.index(b"mdat") + 4 : exif_at]

    with monkeypatch.context() as patch:
        patch.setattr(as_plugin._LibHeifImageFile, "load", lambda self: pytest.fail("the upload decoded it"))
        assert post_files(client, SimpleUploadedFile("IMG_0044.HEIC", sent)).status_code == 302
    prediction = Prediction.objects.get()
    assert prediction.image.name.endswith(".heic")
    stored = b"".join(client.get(f"/p/{prediction.id}/original/").streaming_content)

    assert len(picture) > 100_000 and picture in stored and b"Phone maker" in stored
    with Image.open(io.BytesIO(stored)) as kept:
        exif = kept.getexif()
        assert 0x8825 not in exif and exif.get_ifd(0x8825) == {}
        assert (exif[0x010F], exif[0x0110]) == ("Phone maker", "Phone 15")
        assert exif.get_ifd(0x8769)[0x9003] == "2026:11:28 09:30:00"
        assert kept.size == sent_size
        assert np.array_equal(np.asarray(kept), sent_pixels)  # every pixel as sent


def test_a_photo_is_stored_as_a_jpeg_without_its_position_when_exiftool_is_missing(
    client, private_media, settings
):
    """Without ExifTool (a broken install) the position is still not stored: the photo is converted."""

    settings.AGEGENDER_EXIFTOOL = "/nonexistent/exiftool"
    sent = phone_heic(phone_exif(orientation=1))

    assert post_files(client, SimpleUploadedFile("IMG_0045.HEIC", sent)).status_code == 302
    prediction = Prediction.objects.get()
    assert prediction.image.name.endswith(".jpg")
    stored = b"".join(client.get(f"/p/{prediction.id}/original/").streaming_content)
    with Image.open(io.BytesIO(stored)) as kept:
        assert kept.format == "JPEG" and 0x8825 not in kept.getexif()
        assert kept.getexif()[0x0110] == "Phone 15" and kept.size == (384, 512)
    assert stored_files(private_media) == [private_media / prediction.image.name]


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "shot.png"), ("WEBP", "shot.webp"), ("AVIF", "shot.avif")])
def test_a_png_webp_or_avif_loses_its_position_too(client, private_media, fmt, name):
    """Phones rarely write these, but an editor or an exporter may keep the position: it is removed the
    same way, every pixel and the rest of the EXIF kept."""

    import numpy as np

    from tests.conftest import astronaut_portrait

    buffer = io.BytesIO()
    Image.fromarray(astronaut_portrait()).save(buffer, format=fmt, exif=phone_exif(orientation=1).tobytes())
    sent = buffer.getvalue()

    assert post_files(client, SimpleUploadedFile(name, sent)).status_code == 302
    prediction = Prediction.objects.get()
    assert prediction.image.name.endswith(name.rsplit(".", 1)[-1])
    stored = (private_media / prediction.image.name).read_bytes()
    assert len(stored) < len(sent)
    with Image.open(io.BytesIO(stored)) as kept, Image.open(io.BytesIO(sent)) as photo:
        kept.load()
        exif = kept.getexif()
        assert 0x8825 not in exif and exif.get_ifd(0x8825) == {}
        assert exif[0x0110] == "Phone 15" and exif.get_ifd(0x8769)[0x9003] == "2026:11:28 09:30:00"
        assert np.array_equal(np.asarray(kept), np.asarray(photo))  # every pixel as sent


def test_a_png_exiftool_cannot_rewrite_is_stored_as_a_jpeg_without_its_position(client, private_media):
    """Two EXIF chunks (which one do readers believe?): ExifTool refuses to rewrite it, and the photo is
    converted instead."""

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(
        buffer, format="PNG", exif=phone_exif(orientation=1).tobytes()
    )
    sent = buffer.getvalue()
    at = sent.index(b"eXIf") + 4  # the chunk's data, after its length and type
    length = int.from_bytes(sent[at - 8 : at - 4], "big")
    chunk = sent[at - 8 : at + length + 4]
    doubled = sent[: at + length + 4] + chunk + sent[at + length + 4 :]

    assert post_files(client, SimpleUploadedFile("shot.png", doubled)).status_code == 302
    prediction = Prediction.objects.get()
    assert prediction.image.name.endswith(".jpg")
    with Image.open(private_media / prediction.image.name) as kept:
        assert kept.format == "JPEG" and kept.size == (64, 48)
        assert 0x8825 not in kept.getexif() and kept.getexif()[0x0110] == "Phone 15"
