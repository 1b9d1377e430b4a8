"""Server-side checks on an uploaded photo, each failure with a message for the person who sent it.

Pillow is light enough for the web process; the engine (`ml`) checks the image again in the worker.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from predictions import metadata
from predictions.upload_handlers import MAX_NAME_LENGTH, sent_name_length

register_heif_opener()
logger = logging.getLogger(__name__)

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
_EXTENSION_FOR_FORMAT = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
    "AVIF": "avif",
    "HEIF": "heic",
}
#: Pillow calls a JPEG that carries more pictures (a camera's large preview, a phone's depth map: CIPA's
#: Multi-Picture Format) "MPO"; it is a JPEG to browsers and to us.
_SAME_FORMAT = {"MPO": "JPEG"}
#: Formats browsers do not display (Chrome and Firefox show no HEIC). Such a photo is stored as sent and
#: only its header is read here: decoding a phone's 12-MP HEIC takes 0.5–1 s, too long to spend on every
#: photo of an upload in the web request. The worker decodes it anyway, and makes the JPEG the pages show.
BROWSERS_CANNOT_SHOW = {"HEIF"}
#: A photo whose GPS position ExifTool cannot remove (a file it cannot rewrite, or no ExifTool) is
#: converted to a JPEG without it instead.
CONVERTED_JPEG_QUALITY = 92
#: File names are kept (shown on the pages, 255 characters in the database); a longer one is refused with
#: a message rather than cut (`upload_handlers`).

#: Formats Pillow decodes only at full size, at 9–16 bytes a pixel: they get a lower pixel limit. The
#: engine's own copy is `ml.images.FULL_DECODE_FORMATS` (the web process does not import `ml`; a test
#: keeps the two the same).
FULL_DECODE_FORMATS = frozenset({"WEBP", "HEIF", "AVIF", "GIF"})


class UploadRejected(ValueError):
    """The file cannot be accepted; the message says why, in plain words."""


@dataclass(frozen=True)
class CheckedImage:
    extension: str  # the one we store the file under, from its real format
    width: int  # upright, after EXIF orientation
    height: int
    #: The photo to store instead of the upload: the upload itself without where it was taken
    #: (`metadata.without_location`), or, where that cannot be done, the photo as a JPEG.
    converted: bytes | None = None


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def allowed_extensions_text() -> str:
    return ", ".join(ext.upper() for ext in settings.AGEGENDER_ALLOWED_EXTENSIONS)


def check_uploads(uploads: list[UploadedFile]) -> list[tuple[UploadedFile, CheckedImage | str]]:
    """Each photo of one upload checked, or why it was refused; together they may hold at most
    `AGEGENDER_MAX_UPLOAD_PIXELS`, and a photo past that is refused before it is decoded."""
    pixels_left = settings.AGEGENDER_MAX_UPLOAD_PIXELS
    checked: list[tuple[UploadedFile, CheckedImage | str]] = []
    for upload in uploads:
        try:
            photo = check_image_upload(upload, upload_pixels_left=pixels_left)
        except UploadRejected as exc:
            checked.append((upload, str(exc)))
            continue
        pixels_left -= photo.width * photo.height
        checked.append((upload, photo))
    return checked


def check_image_upload(upload: UploadedFile, *, upload_pixels_left: int | None = None) -> CheckedImage:
    """Accept a photo or raise `UploadRejected`: allowed extension, not empty, within the size limit,
    a real image of an allowed format, not absurdly large in pixels (nor more than `upload_pixels_left`,
    what its upload may still hold), and complete (not truncated)."""
    name = upload.name or ""
    if (length := sent_name_length(upload)) > MAX_NAME_LENGTH:
        raise UploadRejected(
            f"The file name is {length} characters long; the limit is {MAX_NAME_LENGTH}. "
            "Rename the file and send it again."
        )
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
    with metadata.on_disk(upload) as path:
        return _checked(path, allowed_formats, upload_pixels_left)


def _checked(path: Path, allowed_formats: set[str], upload_pixels_left: int | None) -> CheckedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image_format = _SAME_FORMAT.get(image.format, image.format)
                if image_format not in allowed_formats:
                    raise UploadRejected(
                        f"The file is a {image.format or 'unknown'} image; "
                        f"only {allowed_extensions_text()} photos are accepted."
                    )
                width, height = image.size  # from the header: nothing decoded before the pixel limits
                if width * height > (limit := _pixel_limit(image_format)):
                    raise UploadRejected(
                        f"The image is {width}×{height} pixels; the limit is {limit / 1e6:g} megapixels"
                        + (
                            f" for a {image.format} photo (a JPEG may have more)."
                            if limit < settings.AGEGENDER_MAX_IMAGE_PIXELS
                            else "."
                        )
                    )
                if upload_pixels_left is not None and width * height > upload_pixels_left:
                    raise UploadRejected(
                        f"One upload may hold {settings.AGEGENDER_MAX_UPLOAD_PIXELS / 1e6:g} megapixels "
                        f"in all, and this {width}×{height} photo goes past that: send it in another upload."
                    )
                orientation = image.getexif().get(0x0112, 1)  # EXIF orientation (a PNG's: decodes it)
                if image_format not in BROWSERS_CANNOT_SHOW:
                    if image_format == "JPEG":
                        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # fast, reads all
                    image.load()
                elif _truncated(path, image):  # not decoded here: see BROWSERS_CANNOT_SHOW
                    raise _incomplete()
                converted = _without_location(path, image, (width, height))
    except UploadRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRejected("The image has too many pixels to process.") from None
    except UnidentifiedImageError:
        if _truncated(path, None):  # a HEIC with its index cut off: Pillow cannot even tell what it is
            raise _incomplete() from None
        raise UploadRejected("This file is not an image (or not one we can read).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc)
        if any(sign in message.lower() for sign in ("truncated", "broken data stream", "end of file")):
            raise _incomplete() from None
        raise UploadRejected("The image is damaged and cannot be read.") from None
    if converted is not None and converted.as_jpeg:
        return CheckedImage(extension="jpg", width=width, height=height, converted=converted.data)  # upright
    if orientation in (5, 6, 7, 8) and image_format not in BROWSERS_CANNOT_SHOW:  # libheif turns a HEIC
        width, height = height, width  # rotated a quarter turn: the upright photo is the other way round
    return CheckedImage(
        extension=_EXTENSION_FOR_FORMAT[image_format],
        width=width,
        height=height,
        converted=converted.data if converted is not None else None,
    )


def _pixel_limit(image_format: str) -> int:
    """The most pixels a photo of this format may have: lower for those a worker decodes only at full size
    (`FULL_DECODE_FORMATS`)."""
    if image_format in FULL_DECODE_FORMATS:
        return min(settings.AGEGENDER_MAX_IMAGE_PIXELS, settings.AGEGENDER_MAX_FULL_DECODE_PIXELS)
    return settings.AGEGENDER_MAX_IMAGE_PIXELS


def _incomplete() -> UploadRejected:
    return UploadRejected("The image is incomplete (the file is truncated or damaged).")


def _truncated(path: Path, image: Image.Image | None) -> bool:
    """Whether ExifTool finds the file cut short; without ExifTool, whether decoding it fails."""
    try:
        return metadata.truncated(path)
    except metadata.MetadataError as exc:
        logger.warning("Completeness not checked by ExifTool (%s); decoding instead", exc)
        if image is None:
            return False
        image.load()  # raises on a file cut short
        return False


@dataclass(frozen=True)
class _Converted:
    data: bytes
    as_jpeg: bool


def _without_location(path: Path, image: Image.Image, size: tuple[int, int]) -> _Converted | None:
    """The photo to store instead of the upload, or None to store it as sent: the upload without where it
    was taken (`metadata.without_location`), checked by reading it back; where ExifTool cannot rewrite
    it, or the result still reads with a position, the photo as a JPEG without it."""
    xmp = image.info.get("xmp") or b""
    if _GPS_IFD not in image.getexif() and b"GPS" not in (xmp if isinstance(xmp, bytes) else xmp.encode()):
        return None  # no position to remove (ExifTool is not started for nothing)
    try:
        cleaned = metadata.without_location(path)
        if cleaned is None:
            if _GPS_IFD not in image.getexif():
                return None
        elif _reads_as_without_location(cleaned, image, size):
            return _Converted(cleaned, as_jpeg=False)
    except metadata.MetadataError as exc:
        logger.warning("Position not removed in place (%s); storing the photo as a JPEG", exc)
    with Image.open(path) as whole:  # again: a JPEG was read at an eighth of its size above
        return _Converted(_as_jpeg(whole), as_jpeg=True)


def _reads_as_without_location(cleaned: bytes, sent: Image.Image, size: tuple[int, int]) -> bool:
    """Whether `cleaned` reads as `sent`'s EXIF less the position, and as a picture of `size` (`sent`'s
    before a JPEG's draft)."""
    try:
        with Image.open(io.BytesIO(cleaned)) as kept:
            before, after = sent.getexif(), kept.getexif()
            return (
                kept.size == size
                and not after.get_ifd(_GPS_IFD)
                and _tags(after) == _tags(before)
                and after.get_ifd(_EXIF_IFD) == before.get_ifd(_EXIF_IFD)
            )
    except (OSError, SyntaxError, ValueError):
        return False


def _tags(exif: Image.Exif) -> dict[int, object]:
    """IFD0's tags, less the offsets of the IFDs it points to (a rewritten file moves them)."""
    return {tag: value for tag, value in exif.items() if tag not in _POINTERS}


#: The EXIF tag that points to where a photo was taken (GPS latitude, longitude, altitude, time).
_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_POINTERS = {_GPS_IFD, _EXIF_IFD, 0xA005}  # and the interoperability IFD


def _as_jpeg(image: Image.Image) -> bytes:
    """The photo upright as a JPEG, with its colour profile and its EXIF (orientation reset). libheif has
    already applied a HEIC's own rotation and mirroring, which `exif_transpose` leaves alone."""
    upright = ImageOps.exif_transpose(image)
    rgb = upright if upright.mode == "RGB" else upright.convert("RGB")
    extra = {"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") else {}
    exif = upright.getexif()
    exif.pop(_GPS_IFD, None)  # where the photo was taken: see `metadata.without_location`
    if exif:
        extra["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=CONVERTED_JPEG_QUALITY, **extra)
    return buffer.getvalue()
