"""Small Pillow helpers the worker needs besides the engine: upright size and a thumbnail."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

THUMBNAIL_SIZE = (320, 320)
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Upright:
    width: int
    height: int
    thumbnail_jpeg: bytes


def upright_size_and_thumbnail(data: bytes) -> Upright:
    """Size after EXIF orientation (the frame the engine's boxes are in) and a small JPEG thumbnail."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size  # from the header, before any reduced-scale decoding
        if image.getexif().get(0x0112, 1) in _QUARTER_TURNS:
            width, height = height, width
        image.draft("RGB", (THUMBNAIL_SIZE[0] * 2, THUMBNAIL_SIZE[1] * 2))  # JPEG: decode at reduced scale
        thumb = ImageOps.exif_transpose(image).convert("RGB")
        thumb.thumbnail(THUMBNAIL_SIZE)
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=82)
    return Upright(width=width, height=height, thumbnail_jpeg=buffer.getvalue())
