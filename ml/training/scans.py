"""Faces as old prints, scans and cut photos show them: a training augmentation and validation sets.

Two independent implementations on purpose, so that the validation sets do not reward learning the
augmentation's own artefacts:

- `RandomScan`, a Keras layer (any backend; on JAX it runs in the compiled augmenter), spoils a share of
  the training chips as an old print or scan would: greyscale, sepia or faded colour, low contrast and
  lifted blacks, a halftone screen, scanner blur, low resolution, film grain and JPEG blocking.
- `scan_photo`, `scan_chips` and `cut_chips` (NumPy and Pillow, seeded per face) make the validation
  sets that stand for scanned family photos and for faces cut by the frame's edge.
"""

from __future__ import annotations

import functools
import io

import numpy as np

#: JPEG's standard luminance quantisation table (quality 50).
JPEG_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float32,
)
LUMA = (0.299, 0.587, 0.114)
SEPIA = (1.0, 0.84, 0.62)


def dct_matrix(n: int = 8) -> np.ndarray:
    """The orthonormal DCT-II matrix: coefficients = D @ block @ D.T."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


def _make_layer():
    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable(package="agegender")
    class RandomScan(layers.Layer):
        """Training only: with probability `rate` a chip (all framings of a stack alike) is shown as an old
        print or scan; each step of the spoiling is drawn on its own. Identity at inference."""

        def __init__(self, rate: float = 0.5, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.rate, self.seed = rate, seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, x, training=False):
            if not training or self.rate <= 0:
                return x
            n, height, width, channels = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
            u = keras.random.uniform((n, 16), seed=self.seed_generator)
            on = u[:, 0] < self.rate

            def pick(chance, column):
                return ops.reshape(on & (u[:, column] < chance), (-1, 1, 1, 1))

            def level(column, low, high):
                return ops.reshape(low + (high - low) * u[:, column], (-1, 1, 1, 1))

            groups = ops.reshape(x, (-1, height, width, channels // 3, 3))
            luma = ops.sum(groups * ops.convert_to_tensor(LUMA), axis=-1, keepdims=True)
            grey = ops.reshape(ops.repeat(luma, 3, axis=-1), (-1, height, width, channels))
            tint = ops.tile(ops.convert_to_tensor(SEPIA), (channels // 3,))
            sepia = grey * tint + 12.0
            washed = grey + level(3, 0.3, 0.7) * (x - grey)  # faded colour: saturation lost, warmer
            faded = washed * ops.tile(ops.convert_to_tensor((1.04, 1.0, 0.86)), (channels // 3,)) + 8.0
            mode = u[:, 2]
            x = ops.where(pick(1.0, 1) & ops.reshape(mode < 0.35, (-1, 1, 1, 1)), grey, x)
            x = ops.where(pick(1.0, 1) & ops.reshape((mode >= 0.35) & (mode < 0.6), (-1, 1, 1, 1)), sepia, x)
            x = ops.where(pick(1.0, 1) & ops.reshape((mode >= 0.6) & (mode < 0.85), (-1, 1, 1, 1)), faded, x)
            # low contrast and lifted blacks, as a faded print
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
            flat = mean + level(5, 0.45, 0.9) * (x - mean)
            lifted = flat * (1.0 - level(6, 0.0, 0.2)) + 255.0 * level(6, 0.0, 0.2) + level(7, -20.0, 20.0)
            x = ops.where(pick(0.5, 4), lifted, x)
            # halftone screen of a printed photo (a 3-px dot grid), then the scanner's softness
            rows = ops.cos(2.0 * np.pi * ops.arange(height, dtype="float32") / 3.0)
            cols = ops.cos(2.0 * np.pi * ops.arange(width, dtype="float32") / 3.0)
            screen = ops.reshape(ops.outer(rows, cols), (1, height, width, 1))
            x = ops.where(pick(0.12, 8), x * (1.0 + level(9, 0.08, 0.25) * screen), x)
            taps = ops.exp(-0.5 * (ops.arange(-2, 3, dtype="float32") / 1.1) ** 2)
            kernel = ops.outer(taps, taps) / ops.sum(taps) ** 2
            kernel = ops.tile(ops.reshape(kernel, (5, 5, 1, 1)), (1, 1, channels, 1))
            blurred = ops.depthwise_conv(x, kernel, padding="same")
            x = ops.where(pick(0.45, 10), x + level(11, 0.4, 1.0) * (blurred - x), x)
            small = ops.image.resize(x, (height // 2, width // 2), interpolation="bilinear", antialias=True)
            coarse = ops.image.resize(small, (height, width), interpolation="bilinear")
            x = ops.where(pick(0.25, 12), coarse, x)
            # film grain: the same noise in every channel, softened a little
            noise = keras.random.normal((n, height, width, 1), seed=self.seed_generator)
            noise = ops.depthwise_conv(noise, kernel[..., :1, :], padding="same") * 1.6
            x = ops.where(pick(0.4, 13), x + level(14, 3.0, 14.0) * noise, x)
            x = ops.clip(x, 0.0, 255.0)
            if height % 8 == 0 and width % 8 == 0:
                x = ops.where(pick(0.35, 15), self._jpeg(x, level(15, 1.0, 4.0)), x)
            return x

        @staticmethod
        def _jpeg(x, scale):
            """Each 8×8 block's DCT coefficients rounded to JPEG's table × `scale` (quality ≈ 50 / scale)."""
            height, width, channels = x.shape[1], x.shape[2], x.shape[3]
            d = ops.convert_to_tensor(dct_matrix())
            # rows of blocks fold into the batch axis: TensorFlow broadcasts at most 5 dimensions
            blocks = ops.reshape(x - 128.0, (-1, 8, width // 8, 8, channels))
            coefficients = ops.einsum("uy,myaxc->muaxc", d, blocks)
            coefficients = ops.einsum("vx,muaxc->muavc", d, coefficients)
            step = ops.reshape(ops.convert_to_tensor(JPEG_TABLE), (1, 8, 1, 8, 1))
            step = step * ops.reshape(ops.repeat(ops.reshape(scale, (-1,)), height // 8), (-1, 1, 1, 1, 1))
            coefficients = ops.round(coefficients / step) * step
            blocks = ops.einsum("uy,muavc->myavc", d, coefficients)
            blocks = ops.einsum("vx,myavc->myaxc", d, blocks)
            return ops.clip(ops.reshape(blocks, (-1, height, width, channels)) + 128.0, 0.0, 255.0)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "rate": self.rate, "seed": self.seed}

    return RandomScan


_layer = None


def random_scan(rate: float = 0.5, seed=None, **kwargs):
    """A `RandomScan` layer (the class is made on first use, so that importing this module needs no Keras)."""
    global _layer
    if _layer is None:
        _layer = _make_layer()
    return _layer(rate=rate, seed=seed, **kwargs)


# ---------------------------------------------------------------- validation sets (NumPy and Pillow)


def scan_photo(photo: np.ndarray, rng: np.random.Generator, face_px: float = 64.0) -> np.ndarray:
    """One uint8 RGB photo (H, W, 3) as an old print scanned: always a colour change (grey in one
    case of five, else sepia, faded colour or the colour as it was), then each other step drawn on its
    own. Blur, grain and the halftone screen scale with `face_px`, the face's size in pixels (the chip's
    side for a chip), so that a photo and a chip of the same face are spoilt alike."""
    from PIL import Image, ImageFilter
    from scipy.ndimage import gaussian_filter

    scale = face_px / 64.0
    x = photo.astype(np.float32)
    grey = (x @ np.array(LUMA, np.float32))[..., None].repeat(3, axis=-1)
    mode = rng.random()
    if mode < 0.2:
        x = grey
    elif mode < 0.45:
        x = grey * np.array(SEPIA, np.float32) * rng.uniform(0.95, 1.05) + rng.uniform(5, 25)
    elif mode < 0.8:  # faded colour: a cast towards yellow or magenta, saturation lost
        cast = np.array([1.05, 1.0, 0.82] if rng.random() < 0.6 else [1.06, 0.9, 1.0], np.float32)
        x = (grey + rng.uniform(0.25, 0.7) * (x - grey)) * cast + rng.uniform(0, 15)
    if rng.random() < 0.6:
        mean = x.mean()
        x = mean + rng.uniform(0.4, 0.85) * (x - mean)
        lift = rng.uniform(0.0, 0.25)
        x = x * (1 - lift) + 255 * lift
    height, width = photo.shape[:2]
    if rng.random() < 0.1:  # halftone: a rotated dot screen
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle, period = np.deg2rad(rng.uniform(0, 45)), rng.uniform(2.5, 4.0) * scale
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        screen = np.cos(2 * np.pi * u / period) * np.cos(2 * np.pi * v / period)
        x = x * (1 + rng.uniform(0.05, 0.2) * screen[..., None])
    image = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.4) * scale))
    if rng.random() < 0.4:
        share = rng.uniform(0.5, 0.75)
        small = (max(1, round(width * share)), max(1, round(height * share)))
        image = image.resize(small, Image.Resampling.BOX).resize((width, height), Image.Resampling.BICUBIC)
    x = np.asarray(image, np.float32)
    if rng.random() < 0.6:  # film grain, the same in every channel
        grain = gaussian_filter(rng.normal(0, 1, (height, width)), 0.6 * scale)
        x = x + (grain / grain.std() * rng.uniform(2, 8))[..., None].astype(np.float32)
    image = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    if rng.random() < 0.7:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(30, 80)))
        image = Image.open(buffer).convert("RGB")
    return np.asarray(image)


def scan_chips(chips: np.ndarray, seed: int = 0, scan_scale: int = 4) -> np.ndarray:
    """Every chip of (N, S, S, 3) as a face of a scanned old print, face `i` drawn from seed (`seed`, `i`):
    the same set every run, and a face's two framings (called with the same seed) spoilt alike. The print
    is spoilt where the scan holds the face at `scan_scale` times the chip's size (a face of about 200 px
    in a 400×500 scan for 64-px chips), then cut down to the chip as the aligner would, so that grain and
    JPEG blocks are as fine, relative to the face, as in a real scan."""
    from PIL import Image

    size = chips.shape[1]
    big = size * scan_scale
    out = []
    for i, chip in enumerate(chips):
        photo = Image.fromarray(np.clip(chip, 0, 255).astype(np.uint8)).resize(
            (big, big), Image.Resampling.BICUBIC
        )
        spoilt = scan_photo(np.asarray(photo), np.random.default_rng((seed, i)), face_px=0.7 * big)
        out.append(
            np.asarray(
                Image.fromarray(spoilt).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            )
        )
    return np.stack(out)


def cut_chips(chips: np.ndarray, seed: int = 0, framing_scale: float = 1.0) -> np.ndarray:
    """Every chip with one side cut off by the photo's edge (15–35% of the face), filled as the aligner
    fills what lies outside a photo (its edge row repeated). `framing_scale` maps the cut into a tighter
    framing of the same face (the "face" chip shows the middle of the "image" chip at about 1.6×)."""
    out = np.array(chips, copy=True)
    size = chips.shape[1]
    for i in range(len(chips)):
        rng = np.random.default_rng((seed, i))
        side, share = int(rng.integers(4)), rng.uniform(0.15, 0.35)
        # the cut's position in the loose framing, carried into this framing about the centre
        edge = size / 2 + (0.5 - share) * size * framing_scale
        keep = int(np.clip(round(edge), 1, size))
        chip = np.rot90(out[i], side)  # cut on the right of the turned chip
        chip[:, keep:] = chip[:, keep - 1 : keep]
        out[i] = np.rot90(chip, -side)
    return out


def cut_photo(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo with 25–45% of its width or height cut away on one side: the datasets' faces fill the
    middle of their photos, so this cuts the face by the frame's edge as a tight snapshot does."""
    height, width = photo.shape[:2]
    side, share = int(rng.integers(4)), rng.uniform(0.25, 0.45)
    if side == 0:
        return photo[:, int(width * share) :]
    if side == 1:
        return photo[:, : width - int(width * share)]
    if side == 2:
        return photo[int(height * share) :]
    return photo[: height - int(height * share)]


#: What `spoiled_photo` can do to a photo (`python -m ml evaluate --degrade`).
PHOTO_SPOILS = ("scan", "cut")


@functools.lru_cache(maxsize=4096)  # every model of one evaluation reads the same spoilt photo
def spoiled_photo(path, kind: str, key: str) -> bytes:
    """The photo at `path`, upright, spoilt by `kind` ("scan" or "cut") with draws seeded by its `key`
    (the same photo every run and for every model), as JPEG bytes."""
    import hashlib

    from PIL import Image, ImageOps

    seed = int.from_bytes(hashlib.sha256(f"{kind}/{key}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    with Image.open(path) as image:
        photo = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if kind == "scan":  # the datasets' faces span about 60% of the photo's shorter side
        photo = scan_photo(photo, rng, face_px=0.6 * min(photo.shape[:2]))
    elif kind == "cut":
        photo = cut_photo(photo, rng)
    else:
        raise ValueError(f"unknown degradation {kind!r}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(photo)).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()
