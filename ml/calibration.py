"""Turning the age distribution into an estimate and an honest range, and chip-level validation metrics."""

from __future__ import annotations

import numpy as np

from ml.data import AGE_BUCKETS, age_bucket

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


#: Eye distances (px in the photo) at which the range's widening for small faces is fitted. MTCNN's
#: smallest faces (20 px) have their eyes about 8 px apart; the 64-px chip's own eye distance is 14.4.
SMALL_FACE_EYES = (4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0)


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


def fit_small_face_widening(predict, ages: np.ndarray, eyes=SMALL_FACE_EYES) -> dict:
    """How much wider the range must be for faces that were small in the photo.

    `predict(eye_px)` gives the age distributions of the same faces made that small (`None`: as they
    are; see `ml.alignment.as_if_small`). At each eye distance the widening factor that gives those
    faces the coverage they get as they are is the ratio of the two fitted scales. A ratio, not a
    scale, so it can be fitted on training faces (where the model is over-confident, and the fitted
    scales themselves too small) and applied to the scale fitted on validation or calibration faces.
    Forced to 1 or more and to shrink as faces grow.
    """
    clean = fit_interval_scale(predict(None), ages)
    factors = [max(fit_interval_scale(predict(eye), ages) / clean, 1.0) for eye in eyes]
    factors = np.minimum.accumulate(factors)  # never wider for a larger face
    return {"eye_px": [float(e) for e in eyes], "factor": [round(float(f), 3) for f in factors]}


#: Blurs (Gaussian radius as a share of the eye distance; `ml.alignment.as_if_blurred`) at which the
#: range's widening for blurred faces is fitted: 0.02 is about half a pixel in the 64-px face chip, 0.13
#: three pixels.
BLURS = (0.02, 0.03, 0.045, 0.065, 0.09, 0.13)


def chip_sharpness(chips: np.ndarray) -> np.ndarray:
    """How much fine detail each chip (N, S, S, 3) holds: the energy of its Laplacian with the chip halved
    over that with it quartered, on the central three quarters of the chip (the face, not the border the
    alignment may pad). A ratio, so that a face's own contrast and texture largely cancel out; halving
    first keeps the 8-bit rounding's noise out of it. On 500 All-Age-Faces face chips (medians): 0.45 as
    they are, 0.33 / 0.24 / 0.17 / 0.12 / 0.09 blurred by 0.03 / 0.045 / 0.065 / 0.09 / 0.13 of the eye
    distance (`ml.alignment.as_if_blurred`; 0.065 is 1.5 px in the 64-px face chip); falling all the
    way, where the full-resolution ratio stops falling at about 0.09 (rounding noise)."""

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


def fit_blurred_face_widening(predict, sharpness_of, ages: np.ndarray, blurs=BLURS) -> dict:
    """How much wider the range must be for blurred faces, by how sharp their chip is.

    `predict(blur)` gives the age distributions of the same faces blurred (`None`: as they are), and
    `sharpness_of(blur)` their chips' `chip_sharpness`. At each blur the factor is the ratio of the fitted
    scales, as for small faces (`fit_small_face_widening`: a ratio cancels the model's over-confidence on
    training faces), placed at those faces' median sharpness. Forced to 1 or more and to shrink as chips
    get sharper.
    """
    clean = fit_interval_scale(predict(None), ages)
    native = float(np.median(sharpness_of(None)))
    points = [
        (float(np.median(sharpness_of(b))), fit_interval_scale(predict(b), ages) / clean) for b in blurs
    ]
    points = sorted(point for point in points if point[0] < native)
    factors = np.minimum.accumulate([max(factor, 1.0) for _, factor in points])  # sharper: never wider
    return {
        "sharpness": [round(s, 4) for s, _ in points],
        "factor": [round(float(f), 3) for f in factors],
        "native_sharpness": round(native, 4),
        "blurs": [float(b) for b in blurs],
    }


def fit_interval_scale(probs: np.ndarray, ages: np.ndarray, coverage: float = 0.8) -> float:
    """The smallest widening factor whose ranges hold the true age for `coverage` of the faces."""
    lo, hi = 0.2, 6.0
    for _ in range(40):
        mid = (lo + hi) / 2
        _, low, high = age_interval(probs, mid)
        if np.mean((ages >= low) & (ages <= high)) >= coverage:
            hi = mid
        else:
            lo = mid
    return round(hi, 4)


def summarise(pred_age, low, high, male_prob, true_age, true_male) -> dict:
    err = np.abs(pred_age - true_age)
    correct = (male_prob >= 0.5) == (true_male >= 0.5)
    return {
        "count": int(len(err)),
        "age_mae": round(float(err.mean()), 3) if len(err) else None,
        "cs5": round(float((err <= 5).mean()), 4) if len(err) else None,
        "gender_accuracy": round(float(correct.mean()), 4) if len(err) else None,
        "interval_coverage": round(float(((true_age >= low) & (true_age <= high)).mean()), 4)
        if len(err)
        else None,
        "interval_width": round(float((high - low).mean()), 2) if len(err) else None,
    }


def evaluate_chips(outputs: dict[str, np.ndarray], chips, interval_scale: float) -> dict:
    """Metrics over chips (no detection step): overall, per dataset and per age bucket."""
    age, low, high = age_interval(outputs["age"], interval_scale)
    male = outputs["gender"]
    result: dict = {"overall": summarise(age, low, high, male, chips.ages, chips.males), "datasets": {}}
    for name in sorted(set(chips.datasets)):
        mask = chips.datasets == name
        entry = summarise(age[mask], low[mask], high[mask], male[mask], chips.ages[mask], chips.males[mask])
        buckets = np.array([age_bucket(a) for a in chips.ages[mask]])
        entry["buckets"] = {}
        for bucket, _, _ in AGE_BUCKETS:
            sel = buckets == bucket
            if sel.any():
                sub = np.flatnonzero(mask)[sel]
                entry["buckets"][bucket] = summarise(
                    age[sub], low[sub], high[sub], male[sub], chips.ages[sub], chips.males[sub]
                )
        result["datasets"][name] = entry
    result["interval_by_width"] = interval_by_width(age, low, high, chips.ages)
    return result


def interval_by_width(age, low, high, true_age, groups: int = 3) -> list[dict]:
    """Coverage and error for the narrowest to the widest third of ranges: sure faces get narrow ranges."""
    order = np.argsort(high - low, kind="stable")
    rows = []
    for part in np.array_split(order, groups):
        rows.append(
            {
                "count": int(len(part)),
                "interval_width": round(float((high[part] - low[part]).mean()), 2),
                "interval_coverage": round(
                    float(((true_age[part] >= low[part]) & (true_age[part] <= high[part])).mean()), 4
                ),
                "age_mae": round(float(np.abs(age[part] - true_age[part]).mean()), 3),
            }
        )
    return rows
