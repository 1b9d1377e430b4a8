"""Decoding uploads into upright RGB images, with one clear error for anything unusable."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from ml.errors import ImageError

register_heif_opener()  # HEIC/HEIF, what iPhones save by default (libheif inside pillow-heif's wheel)

#: Largest image we agree to decode (pixels). Larger files are refused as possible decompression bombs.
MAX_PIXELS = int(os.environ.get("AGEGENDER_MAX_PIXELS", 60_000_000))
#: Formats that Pillow decodes only at full size and through a buffer of the decoder's own (libwebp,
#: libheif; GIF through its palette): 9–16 bytes a pixel against a PNG's 4, so a lower limit keeps a worker
#: under 1.2 GB on them (`bench/worker_memory.py`). A JPEG decodes reduced; PNG, BMP and TIFF straight
#: into the image, which is reduced before any conversion.
FULL_DECODE_FORMATS = frozenset({"WEBP", "HEIF", "AVIF", "GIF"})
MAX_FULL_DECODE_PIXELS = int(os.environ.get("AGEGENDER_MAX_FULL_DECODE_PIXELS", 20_000_000))
#: Formats a person is expected to upload.
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF", "AVIF"})
_USE = "use JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP or TIFF"

ImageSource = str | os.PathLike | bytes | bytearray | BinaryIO | Image.Image | np.ndarray


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise ImageError("The file is empty.")
        return Image.open(path)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("The file is empty.")
        return Image.open(io.BytesIO(source))
    if hasattr(source, "read"):
        data = source.read()
        if not data:
            raise ImageError("The file is empty.")
        return Image.open(io.BytesIO(data))
    raise TypeError(f"cannot read an image from {type(source).__name__}")


@dataclass(frozen=True)
class Photo:
    """A photo decoded once: upright RGB pixels, possibly reduced (`decode_photo`'s `max_side`), with the
    size of the upright original, the frame in which faces' boxes are given."""

    image: Image.Image
    width: int
    height: int
    format: str = ""
    icc_profile: bytes | None = None

    @property
    def scale(self) -> float:
        """Original pixels per pixel of `image` (1.0 when not reduced)."""
        return self.width / self.image.width


def pixel_limit(image_format: str) -> int:
    """The most pixels we decode in a photo of this (Pillow) format."""
    if image_format in FULL_DECODE_FORMATS:
        return min(MAX_PIXELS, MAX_FULL_DECODE_PIXELS)
    return MAX_PIXELS


def load_image(source: ImageSource) -> Image.Image:
    """Return the image as an upright 8-bit RGB PIL image.

    EXIF orientation is applied, the first frame of an animation is used, and greyscale, palette,
    RGBA (composited on white) and CMYK images are converted. Raises `ImageError` with a readable
    message for empty, truncated, non-image, unsupported or oversized input.
    """
    return decode_photo(source).image


def decode_photo(source: ImageSource | Photo, *, max_side: int | None = None) -> Photo:
    """`load_image`, keeping the original's upright size, format and colour profile; the one place where
    EXIF orientation is applied. With `max_side`, a larger photo is reduced to at most that longer side
    (and more than half of it): a JPEG already while decoding (Pillow's draft mode decodes at 1/2, 1/4
    or 1/8 scale), any other format right after, so that no full-size copy outlives the decode."""
    if isinstance(source, Photo):
        return source
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
            raise ImageError(f"An image array must be HxWx3, got shape {array.shape}.")
        image = Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8), "RGB")
        return _reduced(Photo(image, image.width, image.height), max_side)
    if isinstance(source, Image.Image):
        image = source
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = _open(source)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"The image is too large to process (limit {MAX_PIXELS:,} pixels).") from None
        except UnidentifiedImageError:
            raise ImageError(f"The file is not an image we can read ({_USE}).") from None
        except OSError as exc:
            raise ImageError(f"The image could not be read: {exc}") from None
        if image.format and image.format not in ALLOWED_FORMATS:
            raise ImageError(f"{image.format} images are not supported ({_USE}).")
    width, height = image.size
    if width * height > (limit := pixel_limit(image.format or "")):
        kind = f" for a {image.format} image" if limit < MAX_PIXELS else ""
        raise ImageError(
            f"The image is too large to process ({width}×{height}; limit {limit:,} pixels{kind})."
        )
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels.")
    image_format, icc_profile = image.format or "", image.info.get("icc_profile")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        orientation = image.getexif().get(_ORIENTATION, 1)
        if max_side and max(width, height) > max_side:
            factor = max_side / max(width, height)
            image.draft("RGB", (round(width * factor), round(height * factor)))  # JPEG only; else no-op
        image.load()
        # In place where we opened it: no second full-size copy of a photo that needs no turn.
        upright = ImageOps.exif_transpose(image, in_place=image is not source) or image
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc)
        if any(sign in message.lower() for sign in ("truncated", "broken", "end of file")):
            raise ImageError("The image file is truncated or damaged.") from None
        raise ImageError(f"The image could not be decoded: {message.strip()}") from None
    del image
    if orientation in _QUARTER_TURNS:
        width, height = height, width
    if upright.mode in _SIXTEEN_BIT:  # not reducible as it is: as 32-bit integers, which are
        upright = upright.convert("I")
    if upright.mode in _REDUCIBLE:  # reduced before any conversion, which would copy it at full size
        upright = _reduced(Photo(upright, width, height), max_side).image
    return _reduced(Photo(_to_rgb(upright), width, height, image_format, icc_profile), max_side)


#: The EXIF orientation tag, and its values that turn the picture a quarter (swapping width and height).
_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)
#: Modes that resize as they are (the others are converted to RGB first).
_REDUCIBLE = ("RGB", "RGBA", "L", "LA", "CMYK", "I", "F")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L")


def _reduced(photo: Photo, max_side: int | None) -> Photo:
    image = photo.image
    if not max_side or max(image.size) <= max_side:
        return photo
    # By a whole factor (a box filter in one pass: no intermediate copy, as a resize would make), to
    # between half and all of `max_side`; the model sees faces far below that size.
    reduced = image.reduce(-(-max(image.size) // max_side))
    return Photo(reduced, photo.width, photo.height, photo.format, photo.icc_profile)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # single precision, in place: 4 bytes a pixel
        array = np.asarray(image, dtype=np.float32)
        array *= 255.0 / (float(array.max()) or 1.0)
        image = Image.fromarray(np.clip(array, 0, 255, out=array).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.array(image, dtype=np.float32)
        array -= array.min()
        array *= 255.0 / (float(array.max()) or 1.0)
        image = Image.fromarray(array.astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


Image.MAX_IMAGE_PIXELS = MAX_PIXELS
