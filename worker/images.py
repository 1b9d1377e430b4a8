"""The photo's renditions for the pages, made from the worker's one decode of it (`ml.images.Photo`): a
thumbnail, and a lighter upright copy of a large photo or of one browsers cannot show."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from ml.images import Photo
from predictions.uploads import BROWSERS_CANNOT_SHOW

THUMBNAIL_SIZE = (320, 320)
#: Photos larger than this on a side are shown on the result pages as a copy this large.
DISPLAY_MAX_SIDE = 1600
DISPLAY_JPEG_QUALITY = 85
THUMBNAIL_JPEG_QUALITY = 82
#: The longest side the worker decodes a photo at (larger ones are decoded reduced, `ml.decode_photo`):
#: a 48-MP phone photo is read at 4032×3024, what the engine needs of the faces of any accepted photo,
#: and the worker's memory stays bounded whatever the upload.
WORK_MAX_SIDE = 4096


@dataclass(frozen=True)
class Renditions:
    thumbnail_jpeg: bytes
    #: The photo upright, at most DISPLAY_MAX_SIDE a side, as a JPEG; None where the photo is no larger
    #: and browsers can show it as it is.
    display_jpeg: bytes | None = None


def _jpeg(image: Image.Image, side: int, quality: int, icc_profile: bytes | None) -> bytes:
    """`image` reduced to at most `side` a side (a new image: the photo itself is left alone), as a JPEG."""
    factor = min(1.0, side / max(image.size))
    if factor < 1.0:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(
        buffer, format="JPEG", quality=quality, **({"icc_profile": icc_profile} if icc_profile else {})
    )
    return buffer.getvalue()


def renditions(photo: Photo) -> Renditions:
    """A small JPEG thumbnail and, for a photo larger than DISPLAY_MAX_SIDE or one browsers cannot show (a
    HEIC, stored as sent), an upright JPEG copy at most that size (boxes are percentages of the frame, so
    they fit either)."""
    display = None
    if max(photo.width, photo.height) > DISPLAY_MAX_SIDE or photo.format in BROWSERS_CANNOT_SHOW:
        display = _jpeg(photo.image, DISPLAY_MAX_SIDE, DISPLAY_JPEG_QUALITY, photo.icc_profile)
    thumbnail = _jpeg(photo.image, max(THUMBNAIL_SIZE), THUMBNAIL_JPEG_QUALITY, photo.icc_profile)
    return Renditions(thumbnail_jpeg=thumbnail, display_jpeg=display)
