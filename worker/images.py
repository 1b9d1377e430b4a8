"""Small Pillow helpers the worker needs besides the engine: upright size, a thumbnail, and a lighter
copy of a large photo for the pages."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from predictions.uploads import BROWSERS_CANNOT_SHOW

THUMBNAIL_SIZE = (320, 320)
#: Photos larger than this on a side are shown on the result pages as a copy this large.
DISPLAY_MAX_SIDE = 1600
DISPLAY_JPEG_QUALITY = 85
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Upright:
    width: int
    height: int
    thumbnail_jpeg: bytes
    #: The photo upright, at most DISPLAY_MAX_SIDE a side, as a JPEG; None where the photo is no larger
    #: and browsers can show it as it is.
    display_jpeg: bytes | None = None


def _jpeg(image: Image.Image, quality: int, icc_profile: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(
        buffer, format="JPEG", quality=quality, **({"icc_profile": icc_profile} if icc_profile else {})
    )
    return buffer.getvalue()


def upright_size_and_thumbnail(data: bytes) -> Upright:
    """Size after EXIF orientation (the frame the engine's boxes are in), a small JPEG thumbnail and, for a
    photo larger than DISPLAY_MAX_SIDE or one browsers cannot show (a HEIC, stored as sent), an upright
    JPEG copy at most that size (boxes are percentages of the frame, so they fit either)."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size  # from the header, before any reduced-scale decoding
        if image.getexif().get(0x0112, 1) in _QUARTER_TURNS:
            width, height = height, width
        copy = max(width, height) > DISPLAY_MAX_SIDE or image.format in BROWSERS_CANNOT_SHOW
        wanted = DISPLAY_MAX_SIDE if copy else THUMBNAIL_SIZE[0] * 2
        image.draft("RGB", (wanted, wanted))  # JPEG: decode at reduced scale (never below `wanted`)
        icc_profile = image.info.get("icc_profile")
        upright = ImageOps.exif_transpose(image).convert("RGB")
    display = None
    if copy:
        # Bilinear: from the reduced-scale decode it is a mild reduction; Lanczos cost twice the time.
        upright.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE), Image.Resampling.BILINEAR)
        display = _jpeg(upright, DISPLAY_JPEG_QUALITY, icc_profile)
    upright.thumbnail(THUMBNAIL_SIZE)
    return Upright(
        width=width, height=height, thumbnail_jpeg=_jpeg(upright, 82, icc_profile), display_jpeg=display
    )
