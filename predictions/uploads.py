"""Server-side checks on an uploaded photo, each failure with a message for the person who sent it.

Pillow is light enough for the web process; the engine (`ml`) checks the image again in the worker.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, UnidentifiedImageError

#: Pillow format name for every extension we may allow, and the extension we store it under.
_FORMAT_FOR_EXTENSION = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}
_EXTENSION_FOR_FORMAT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}


class UploadRejected(ValueError):
    """The file cannot be accepted; the message says why, in plain words."""


@dataclass(frozen=True)
class CheckedImage:
    extension: str  # the one we store the file under, from its real format
    width: int  # upright, after EXIF orientation
    height: int


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
                if image.format not in allowed_formats:
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
                if image.format == "JPEG":
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # fast, still reads all
                image.load()
    except UploadRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRejected("The image has too many pixels to process.") from None
    except UnidentifiedImageError:
        raise UploadRejected("This file is not an image (or not one we can read).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc)
        if "truncated" in message or "broken data stream" in message:
            raise UploadRejected("The image is incomplete (the file is truncated or damaged).") from None
        raise UploadRejected("The image is damaged and cannot be read.") from None
    finally:
        upload.seek(0)
    if orientation in (5, 6, 7, 8):  # rotated a quarter turn: the upright photo is the other way round
        width, height = height, width
    return CheckedImage(extension=_EXTENSION_FOR_FORMAT[image.format], width=width, height=height)
