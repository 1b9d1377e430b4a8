"""Turning the age distribution into an estimate and an honest range, widened for small and blurred
faces as the manifest says (fitted by `ml.training.calibration`)."""

from __future__ import annotations

import numpy as np

LOW_Q, HIGH_Q = 0.10, 0.90


def expected_age(probs: np.ndarray) -> np.ndarray:
    return probs @ np.arange(probs.shape[-1], dtype=np.float64)


def age_interval(probs: np.ndarray, scale: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected age and the 10th–90th percentile range of the distribution, widened by `scale` (one
    number, or one per face).

    `scale` is fitted on validation faces so that the range holds the true age for 80% of them; the
    range stays narrow where the distribution is sharp (the model is sure) and wide where it is flat.
    The bounds are whole years, as the service shows them (low rounded down, high up), so that the
    coverage fitted is the coverage served: rounding outward after the fit added about 5 points.
    """
    probs = np.atleast_2d(probs)
    age = expected_age(probs)
    cdf = np.cumsum(probs, axis=-1)
    grid = np.arange(probs.shape[-1], dtype=np.float64)
    low_q = np.array([np.interp(LOW_Q, c, grid) for c in cdf])
    high_q = np.array([np.interp(HIGH_Q, c, grid) for c in cdf])
    low = np.floor(np.clip(age - scale * np.maximum(age - low_q, 0.5), 0, None))
    high = np.ceil(age + scale * np.maximum(high_q - age, 0.5))
    return age, low, high


def small_face_widening(eye_px, table: dict | None) -> np.ndarray:
    """The factor (≥ 1) each face's range is widened by for its size in the photo, from the manifest's
    `interval.small_faces` table (`{"eye_px": [...], "factor": [...]}`); 1 without a table, 1 for faces
    larger than the table's last point, the first point's factor for faces smaller than its first.
    """
    eye_px = np.atleast_1d(np.asarray(eye_px, dtype=np.float64))
    if not table:
        return np.ones_like(eye_px)
    eyes = np.asarray(table["eye_px"], dtype=np.float64)
    factors = np.asarray(table["factor"], dtype=np.float64)
    native = float(table.get("native_eye_px", eyes[-1]))
    if native > eyes[-1]:  # back to 1 at the size where the chip loses nothing
        eyes, factors = np.append(eyes, native), np.append(factors, 1.0)
    return np.interp(eye_px, eyes, factors)


def chip_sharpness(chips: np.ndarray) -> np.ndarray:
    """How much fine detail each chip (N, S, S, 3) holds: the energy of its Laplacian with the chip halved
    over that with it quartered, on the central three quarters of the chip (the face, not the border the
    alignment may pad). A ratio, so that a face's own contrast and texture largely cancel out; halving
    first keeps the 8-bit rounding's noise out of it (how it falls with blur: ml/MODEL_CARD.md)."""

    def laplacian(grey):
        return (
            4 * grey[:, 1:-1, 1:-1]
            - grey[:, :-2, 1:-1]
            - grey[:, 2:, 1:-1]
            - grey[:, 1:-1, :-2]
            - grey[:, 1:-1, 2:]
        )

    def halved(grey):
        count, height, width = grey.shape
        return grey.reshape(count, height // 2, 2, width // 2, 2).mean((2, 4))

    grey = np.asarray(chips, dtype=np.float32).mean(-1)
    size = grey.shape[1]
    side = (size - 2 * (size // 8)) // 4 * 4  # the central three quarters, a multiple of 4 pixels
    start = (size - side) // 2
    half = halved(grey[:, start : start + side, start : start + side])
    fine = (laplacian(half) ** 2).mean((1, 2))
    coarse = (laplacian(halved(half)) ** 2).mean((1, 2))
    return fine / np.maximum(coarse, 1e-6)


def blurred_face_widening(sharpness, table: dict | None) -> np.ndarray:
    """The factor (≥ 1) each face's range is widened by for how blurred its chip is, from the manifest's
    `interval.blurred_faces` table (`{"sharpness": [...], "factor": [...], "native_sharpness": s}`,
    sharpness ascending); 1 without a table and for chips at least as sharp as `native_sharpness` (the
    training faces' median), the first point's factor for chips blurrier than its first."""
    sharpness = np.atleast_1d(np.asarray(sharpness, dtype=np.float64))
    if not table:
        return np.ones_like(sharpness)
    points = np.append(np.asarray(table["sharpness"], dtype=np.float64), table["native_sharpness"])
    factors = np.append(np.asarray(table["factor"], dtype=np.float64), 1.0)
    return np.interp(sharpness, points, factors)


def range_widening(chips: dict, eye_px, small_faces: dict | None, blurred_faces: dict | None) -> np.ndarray:
    """Each face's range widening as served: the factor for its size in the photo (`small_face_widening`;
    `eye_px` None where the photo is not known, as for cached chips) and the one for how blurred its chip
    is (`blurred_face_widening`, on the chips of the input `blurred_faces` names), the larger of the two:
    a small face's chip is blurred by its enlargement, so the two are not compounded."""
    count = len(next(iter(chips.values())))
    widening = np.ones(count) if eye_px is None else small_face_widening(eye_px, small_faces)
    if blurred_faces:
        sharpness = chip_sharpness(chips[blurred_faces["input"]])
        widening = np.maximum(widening, blurred_face_widening(sharpness, blurred_faces))
    return widening
