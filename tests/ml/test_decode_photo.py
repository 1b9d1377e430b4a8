"""`decode_photo`: one decode, upright, reduced above `max_side`; the original's upright size kept, so that
faces found in the reduced photo are given in the original's pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.images import Photo, decode_photo


def _encoded(size: tuple[int, int], kind: str, orientation: int = 1, mode: str = "RGB") -> bytes:
    ramp = np.linspace(0, 255, size[0] * size[1] * len(mode), dtype=np.uint8).reshape(size[1], size[0], -1)
    image = Image.fromarray(ramp.squeeze(), mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format=kind, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_a_large_sideways_photo_is_read_upright_and_reduced(kind):
    photo = decode_photo(_encoded((6000, 4000), kind, orientation=6), max_side=2048)

    assert (photo.width, photo.height) == (4000, 6000)  # the original, upright: portrait
    assert photo.image.mode == "RGB" and 1024 < max(photo.image.size) <= 2048
    assert photo.image.height > photo.image.width  # turned as well
    assert photo.scale == pytest.approx(6000 / max(photo.image.size), rel=0.01)
    assert photo.format == kind


def test_a_photo_within_the_limit_is_not_reduced_nor_one_with_transparency_left_dark():
    photo = decode_photo(_encoded((300, 200), "PNG", mode="RGBA"), max_side=2048)

    assert photo.image.size == (300, 200) and photo.scale == 1.0 and photo.image.mode == "RGB"
    assert decode_photo(photo) is photo  # a photo already decoded is taken as it is


def test_without_max_side_the_photo_is_whole():
    photo = decode_photo(_encoded((3000, 1000), "JPEG"))

    assert photo.image.size == (3000, 1000) and isinstance(photo, Photo)
