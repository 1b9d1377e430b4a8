"""Fitting the range at the end of training: its width (`fit_interval_scale`), its widenings for small
and blurred faces, and chip-level validation metrics. Serving reads the results (`ml.calibration`)."""

from __future__ import annotations

import numpy as np

from ml.calibration import age_interval
from ml.training.data import AGE_BUCKETS, age_bucket

#: Eye distances (px in the photo) at which the range's widening for small faces is fitted. MTCNN's
#: smallest faces (20 px) have their eyes about 8 px apart; the 64-px chip's own eye distance is 14.4.
SMALL_FACE_EYES = (4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0)


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
