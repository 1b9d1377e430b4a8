"""Decoding uploads into upright RGB images, with one clear error for anything unusable."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from ml.errors import ImageError

register_heif_opener()  # HEIC/HEIF, what iPhones save by default (libheif inside pillow-heif's wheel)

#: Largest image we agree to decode (pixels). Larger files are refused as possible decompression bombs.
MAX_PIXELS = int(os.environ.get("AGEGENDER_MAX_PIXELS", 60_000_000))
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


def load_image(source: ImageSource) -> Image.Image:
    """Return the image as an upright 8-bit RGB PIL image.

    EXIF orientation is applied, the first frame of an animation is used, and greyscale, palette,
    RGBA (composited on white) and CMYK images are converted. Raises `ImageError` with a readable
    message for empty, truncated, non-image, unsupported or oversized input.
    """
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
            raise ImageError(f"An image array must be HxWx3, got shape {array.shape}.")
        return Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8), "RGB")
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
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"The image is too large to process ({width}×{height}; limit {MAX_PIXELS:,} pixels)."
        )
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels.")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc)
        if any(sign in message.lower() for sign in ("truncated", "broken", "end of file")):
            raise ImageError("The image file is truncated or damaged.") from None
        raise ImageError(f"The image could not be decoded: {message.strip()}") from None
    return _to_rgb(upright)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = (array - array.min()) / ((array.max() - array.min()) or 1.0)
        image = Image.fromarray((array * 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


Image.MAX_IMAGE_PIXELS = MAX_PIXELS
