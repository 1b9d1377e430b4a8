"""Decoding: every format a person uploads comes out upright RGB; bad input raises one clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml import ImageError
from ml.images import decode_photo, load_image


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((256, 192))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("PNG", "I;16"),
        ("WEBP", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("HEIF", "RGB"),
        ("AVIF", "RGB"),
        ("MPO", "RGB"),  # a camera's JPEG with a preview inside (Pillow: "MPO")
    ],
)
def test_formats_and_modes_become_rgb_of_the_same_size(portrait, fmt, mode):
    source = portrait.convert(mode)
    image = load_image(encode(source, fmt))
    assert image.mode == "RGB"
    assert image.size == portrait.size
    # the picture survives: correlated with the original luminance
    original = np.asarray(portrait.convert("L"), dtype=float).ravel()
    decoded = np.asarray(image.convert("L"), dtype=float).ravel()
    assert np.corrcoef(original, decoded)[0, 1] > 0.9


def test_rgba_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(encode(rgba, "PNG")).getpixel((3, 3)) == (255, 255, 255)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((200, 0, 0), (0, 0, 200))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    red, _, blue = load_image(buffer.getvalue()).getpixel((8, 8))
    assert red > 150 and blue < 50


@pytest.mark.parametrize(
    ("orientation", "rotate"),
    [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270), (3, Image.Transpose.ROTATE_180)],
)
def test_exif_orientation_is_applied(portrait, orientation, rotate):
    stored = portrait.transpose(rotate)  # how a phone stores a sideways shot
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright = load_image(encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert upright.size == portrait.size
    diff = np.abs(np.asarray(upright, dtype=int) - np.asarray(portrait, dtype=int)).mean()
    assert diff < 6


def test_a_sideways_heic_comes_out_upright(portrait):
    """An iPhone stores a sideways shot with a rotation of its own (HEIF's `irot`, which pillow-heif
    writes for an EXIF orientation); the photo must come out upright, not turned twice or not at all."""
    stored = portrait.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = load_image(encode(stored, "HEIF", exif=exif.tobytes(), quality=90))
    assert upright.size == portrait.size
    diff = np.abs(np.asarray(upright, dtype=int) - np.asarray(portrait, dtype=int)).mean()
    assert diff < 8


def test_truncated_heic_raises_a_clear_error(portrait):
    data = encode(portrait, "HEIF", quality=90)
    with pytest.raises(ImageError, match="truncated or damaged"):
        load_image(data[: len(data) // 2])


def test_paths_file_objects_arrays_and_pil_images_are_accepted(tmp_path, portrait):
    path = tmp_path / "p.png"
    portrait.save(path)
    assert load_image(path).size == portrait.size
    assert load_image(str(path)).size == portrait.size
    assert load_image(io.BytesIO(path.read_bytes())).size == portrait.size
    assert load_image(np.asarray(portrait)).size == portrait.size
    assert load_image(portrait).size == portrait.size


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not an image at all", "not an image"),
        (b"hello, world\n" * 10, "not an image"),
    ],
)
def test_non_images_raise_a_clear_error(payload, message):
    with pytest.raises(ImageError, match=message):
        load_image(payload)


def test_truncated_jpeg_raises_a_clear_error(portrait):
    data = encode(portrait, "JPEG", quality=95)
    with pytest.raises(ImageError, match="truncated|damaged|could not"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused():
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")  # tiny file, 144 million pixels
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="too large"):
        load_image(bomb)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def test_formats_decoded_only_at_full_size_have_a_lower_pixel_limit():
    # 21 MP: within the limit for a PNG, past it for a WebP (libwebp decodes at full size, into a buffer
    # of its own, and a worker would pass 1.2 GB at 50 MP); refused from the header, before decoding.
    flat = Image.new("RGB", (5000, 4200), (120, 110, 100))
    with pytest.raises(ImageError, match=r"5000×4200; limit 20,000,000 pixels for a WEBP image"):
        load_image(encode(flat, "WEBP", quality=50))
    assert load_image(encode(flat, "PNG")).size == (5000, 4200)


def test_sixteen_bit_greyscale_is_reduced_before_it_is_converted():
    ramp = (np.arange(6000 * 60, dtype=np.uint32).reshape(60, 6000) % 65536).astype(np.uint16)
    photo = decode_photo(encode(Image.fromarray(ramp), "PNG"), max_side=4096)
    assert (photo.width, photo.height, photo.image.size, photo.image.mode) == (6000, 60, (3000, 30), "RGB")
    low, high = photo.image.getextrema()[0]
    assert low < 20 and high > 240  # scaled from 16 bits to 8, not cut
