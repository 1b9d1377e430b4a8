"""Server-side checks on an uploaded photo, each failure with a message for the person who sent it.

Pillow is light enough for the web process; the engine (`ml`) checks the image again in the worker.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

register_heif_opener()

#: Pillow format name for every extension we may allow, and the extension we store it under.
_FORMAT_FOR_EXTENSION = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "jfif": "JPEG",  # what Windows browsers often name a JPEG they save
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "heic": "HEIF",
    "heif": "HEIF",
    "avif": "AVIF",
}
_EXTENSION_FOR_FORMAT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "AVIF": "avif"}
#: Pillow calls a JPEG that carries more pictures (a camera's large preview, a phone's depth map: CIPA's
#: Multi-Picture Format) "MPO"; it is a JPEG to browsers and to us.
_SAME_FORMAT = {"MPO": "JPEG"}
#: Formats browsers do not display (Chrome and Firefox show no HEIC): stored as an upright JPEG instead.
_CONVERTED_TO_JPEG = {"HEIF"}
CONVERTED_JPEG_QUALITY = 92


class UploadRejected(ValueError):
    """The file cannot be accepted; the message says why, in plain words."""


@dataclass(frozen=True)
class CheckedImage:
    extension: str  # the one we store the file under, from its real format
    width: int  # upright, after EXIF orientation
    height: int
    #: The photo to store instead of the upload: a JPEG for a format browsers cannot show (HEIC), or
    #: the upload itself without where it was taken (`without_location`).
    converted: bytes | None = None


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def allowed_extensions_text() -> str:
    return ", ".join(ext.upper() for ext in settings.AGEGENDER_ALLOWED_EXTENSIONS)


def check_image_upload(upload: UploadedFile) -> CheckedImage:
    """Accept a photo or raise `UploadRejected`: allowed extension, not empty, within the size limit,
    a real image of an allowed format, not absurdly large in pixels, and complete (not truncated)."""
    name = upload.name or ""
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    allowed = [ext.lower() for ext in settings.AGEGENDER_ALLOWED_EXTENSIONS]
    if extension not in allowed:
        raise UploadRejected(f"Only {allowed_extensions_text()} photos are accepted.")
    if not upload.size:
        raise UploadRejected("The file is empty.")
    limit = settings.AGEGENDER_MAX_UPLOAD_BYTES
    if upload.size > limit:
        raise UploadRejected(f"The file is {_megabytes(upload.size)}; the limit is {_megabytes(limit)}.")

    allowed_formats = {_FORMAT_FOR_EXTENSION[ext] for ext in allowed if ext in _FORMAT_FOR_EXTENSION}
    upload.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(upload) as image:
                image_format = _SAME_FORMAT.get(image.format, image.format)
                if image_format not in allowed_formats:
                    raise UploadRejected(
                        f"The file is a {image.format or 'unknown'} image; "
                        f"only {allowed_extensions_text()} photos are accepted."
                    )
                width, height = image.size
                orientation = image.getexif().get(0x0112, 1)  # EXIF orientation
                if width * height > settings.AGEGENDER_MAX_IMAGE_PIXELS:
                    raise UploadRejected(
                        f"The image is {width}×{height} pixels; the limit is "
                        f"{settings.AGEGENDER_MAX_IMAGE_PIXELS // 1_000_000} megapixels."
                    )
                if image_format == "JPEG":
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # fast, still reads all
                image.load()
                converted = _as_jpeg(image) if image_format in _CONVERTED_TO_JPEG else None
                located = _GPS_IFD in image.getexif()
    except UploadRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRejected("The image has too many pixels to process.") from None
    except UnidentifiedImageError:
        if _looks_like_heif(upload):  # its index cut off: Pillow cannot even tell what it is
            raise UploadRejected("The image is incomplete (the file is truncated or damaged).") from None
        raise UploadRejected("This file is not an image (or not one we can read).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc)
        if any(sign in message.lower() for sign in ("truncated", "broken data stream", "end of file")):
            raise UploadRejected("The image is incomplete (the file is truncated or damaged).") from None
        raise UploadRejected("The image is damaged and cannot be read.") from None
    finally:
        upload.seek(0)
    if converted is not None:
        return CheckedImage(extension="jpg", width=width, height=height, converted=converted)
    if orientation in (5, 6, 7, 8):  # rotated a quarter turn: the upright photo is the other way round
        width, height = height, width
    if located and image_format == "JPEG":
        upload.seek(0)
        converted = without_location(upload.read())
        upload.seek(0)
    return CheckedImage(
        extension=_EXTENSION_FOR_FORMAT[image_format], width=width, height=height, converted=converted
    )


#: The EXIF tag that points to where a photo was taken (GPS latitude, longitude, altitude, time).
_GPS_IFD = 0x8825


def without_location(jpeg: bytes) -> bytes:
    """The JPEG with its EXIF's GPS data (where the photo was taken) and EXIF thumbnail removed, and
    nothing else changed: the compressed picture, the colour profile and the other tags (orientation,
    camera, time) are kept byte for byte, so the photo reads exactly as uploaded. Phones record the place
    in every photo; the service has no use for it, and a stored photo should not carry it."""
    out, at = bytearray(jpeg[:2]), 2  # SOI
    while at + 4 <= len(jpeg) and jpeg[at] == 0xFF:
        marker, length = jpeg[at + 1], int.from_bytes(jpeg[at + 2 : at + 4], "big")
        if marker == 0xDA:  # start of scan: the picture itself, to the end of the file
            break
        segment = jpeg[at : at + 2 + length]
        payload = segment[4:]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            exif = Image.Exif()
            try:
                exif.load(payload)
                exif.pop(_GPS_IFD, None)
                payload = exif.tobytes()  # IFD0 and the Exif IFD; the thumbnail's IFD1 is not written
            except Exception:  # an EXIF Pillow cannot rewrite: keep only the orientation
                orientation = exif.get(0x0112)
                exif = Image.Exif()
                if orientation:
                    exif[0x0112] = orientation
                payload = exif.tobytes()
            segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
        out += segment
        at += 2 + length
    return bytes(out + jpeg[at:])


#: ISO base media file type brands of HEIF stills and sequences (ISO/IEC 23008-12).
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _looks_like_heif(upload: UploadedFile) -> bool:
    upload.seek(0)
    head = upload.read(12)
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _as_jpeg(image: Image.Image) -> bytes:
    """The photo upright as a JPEG, with its colour profile and its EXIF (orientation reset). libheif has
    already applied a HEIC's own rotation and mirroring, which `exif_transpose` leaves alone."""
    upright = ImageOps.exif_transpose(image)
    rgb = upright if upright.mode == "RGB" else upright.convert("RGB")
    extra = {"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") else {}
    exif = upright.getexif()
    exif.pop(_GPS_IFD, None)  # where the photo was taken: see `without_location`
    if exif:
        extra["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=CONVERTED_JPEG_QUALITY, **extra)
    return buffer.getvalue()
