"""Five-point similarity alignment of a face onto a fixed template, and chip cropping."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

#: The widely used 5-point template for a 112×112 face (eyes, nose tip, mouth corners).
_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
)
#: The chip shows more than the tight 112 template: forehead, hair line and chin matter for age.
CHIP_EXPAND = 1.4
_CENTRE = np.array([56.0, 60.0])
#: Two framings (geometries) of the same face. "chip": our own, loose (forehead to below the chin).
#: "face": tighter and lower, the framing of dlib's `get_face_chip_details(shape, size, 0.2)` that the
#: Cydral networks (`ml.training.cydral`) were trained on, measured by aligning 150 faces both ways (dlib's
#: landmarks and chip vs. ours): the dlib chip is our chip's region [12.0, 17.5]–[52.0, 57.3] of 64 px
#: (scale 1.609, rotation 0.5°, which is ignored).
GEOMETRIES = {"chip": (_CENTRE, CHIP_EXPAND), "face": (np.array([56.2, 73.2]), 0.870)}


def template(size: int, geometry: str = "chip") -> np.ndarray:
    """The five template points in pixel coordinates of a `size`×`size` chip of this geometry."""
    centre, expand = GEOMETRIES[geometry]
    return ((_TEMPLATE_112 - centre) / (112.0 * expand) + 0.5) * size


def reframe(chips: np.ndarray, size: int, geometry: str, source_geometry: str = "chip") -> np.ndarray:
    """Chips of `source_geometry` (N, S, S, 3) re-cut to `size` px in `geometry`, without the photos."""
    source = template(chips.shape[1], source_geometry)
    return np.stack([align(chip, source, size, geometry) for chip in chips])


def whole_image_landmarks(width: int, height: int) -> np.ndarray:
    """Where the five landmarks sit if the image is a tight face crop (the `whole_image_fallback` rule)."""
    return _TEMPLATE_112 / 112.0 * np.array([width, height], dtype=np.float64)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama) taking `src` points onto `dst`; returns 2×3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    var = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def align(rgb: np.ndarray, landmarks: np.ndarray, size: int, geometry: str = "chip") -> np.ndarray:
    """Warp the face with these five landmarks onto the template; returns a `size`×`size`×3 uint8 chip.

    Only the region the chip needs is cropped (with replicated borders where it leaves the photo) and,
    where the face is much larger than the chip, pre-shrunk so that the warp does not alias.
    """
    forward = similarity(landmarks, template(size, geometry))
    inverse = _invert(forward)
    corners = apply(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    height, width = rgb.shape[:2]
    crop = rgb[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    if crop.size == 0:
        crop = np.zeros((1, 1, 3), dtype=np.uint8)
    pads = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    crop = np.pad(crop, pads, mode="edge")
    # chip pixel -> crop pixel
    to_crop = inverse.copy()
    to_crop[:, 2] -= (x0, y0)
    shrink = math.floor(1.0 / math.sqrt(abs(np.linalg.det(forward[:, :2]))))
    image = Image.fromarray(crop)
    if shrink >= 2:
        image = image.reduce(shrink)
        to_crop /= shrink
        # a box reduce maps pixel centres: x_small = (x + 0.5) / k - 0.5
        to_crop[:, 2] += 0.5 / shrink - 0.5
    # PIL samples at pixel centres of the output; offset so that coordinates are pixel-centre based.
    a, b, c = to_crop[0]
    d, e, f = to_crop[1]
    c += 0.5 - 0.5 * (a + b)
    f += 0.5 - 0.5 * (d + e)
    chip = image.transform(
        (size, size), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR
    )
    return np.asarray(chip)


def eye_distance(landmarks: np.ndarray) -> float:
    """Pixels between the two eye landmarks: how large the face is in the photo."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    return float(np.hypot(*(landmarks[1] - landmarks[0])))


def native_eye_distance(size: int, geometry: str = "chip") -> float:
    """The eye distance in a `size`-px chip of `geometry`: a face smaller than this in the photo is
    enlarged by the alignment, and its chip holds less detail than the model was trained on."""
    points = template(size, geometry)
    return float(np.hypot(*(points[1] - points[0])))


def as_if_small(chips: np.ndarray, eye_px: float, geometry: str = "chip") -> np.ndarray:
    """Chips (N, S, S, 3) uint8 as they would come out of a photo where the eyes are `eye_px` apart.

    The chip is box-filtered down to the resolution such a face has in the photo (a camera's pixels
    average the light they get) and enlarged back bilinearly, as `align` enlarges a small face. Faces
    at least as large as the chip's own eye distance are returned unchanged.
    """
    size = chips.shape[1]
    small = round(size * eye_px / native_eye_distance(size, geometry))
    if small >= size:
        return chips
    small = max(small, 2)
    return np.stack(
        [
            np.asarray(
                Image.fromarray(chip)
                .resize((small, small), Image.Resampling.BOX)
                .resize((size, size), Image.Resampling.BILINEAR)
            )
            for chip in chips
        ]
    )


def as_if_blurred(chips: np.ndarray, blur: float, geometry: str = "chip") -> np.ndarray:
    """Chips (N, S, S, 3) uint8 of a photo out of focus: a Gaussian blur whose radius is `blur` times the
    chip's own eye distance, so that one `blur` is the same blur in the photo whatever the framing."""
    from PIL import ImageFilter

    if blur <= 0:
        return chips
    radius = blur * native_eye_distance(chips.shape[1], geometry)
    return np.stack(
        [np.asarray(Image.fromarray(chip).filter(ImageFilter.GaussianBlur(radius))) for chip in chips]
    )
