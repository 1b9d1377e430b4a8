"""Faces small in the photo or blurred, end to end: is the age range still honest?

    python bench/small_faces.py [--model-dir ml/models/default] [--per-dataset 400] [--eyes 0,9,10,12,16]
        [--blurs 0.045,0.065,0.09]

Validation photos of both shared datasets are shrunk until the eyes of their face are `--eyes` pixels
apart (the datasets' own faces have them 40–100 px apart; `0` keeps them as they are, the baseline)
and put in the middle of a canvas three times their size, their edges carried outwards, then go
through `ml.Predictor.predict_many` exactly as an upload does: detection, alignment, the model and the
range as served, which widens the range for small faces (`interval.small_faces` in the manifest,
fitted on training faces by `python -m ml train` or `python -m ml small-faces`). For each size: how
many faces the detector still finds, age MAE, gender accuracy, and how often the served range holds
the true age, beside the range without the widening (the same photos answered again with it switched
off: the manifest's single scale). The target is 80%. About 9 minutes here. `--blurs` does the same
for the photos as they are, blurred by a Gaussian whose radius is that share of the face's eye
distance, against the range without its widening for blurred faces (`interval.blurred_faces`). Not a
test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.alignment import eye_distance  # noqa: E402
from ml.images import load_image  # noqa: E402
from ml.training.data import DATASETS_DIR, read_labels, split  # noqa: E402

BATCH = 16


def shrunk(rgb: np.ndarray, factor: float) -> np.ndarray:
    """The photo shrunk by `factor` (box filter, as a camera's pixels average light; 1: as it is) in the
    middle of a canvas three times its size (at least 160 px), its border pixels carried outwards as the
    alignment pads a face at a photo's edge, so that only the face's size differs from training."""
    from PIL import Image

    size = (max(round(rgb.shape[1] * factor), 1), max(round(rgb.shape[0] * factor), 1))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX)) if factor < 1 else rgb
    height, width = max(3 * size[1], 160), max(3 * size[0], 160)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    pads = ((top, height - size[1] - top), (left, width - size[0] - left), (0, 0))
    return np.pad(small, pads, mode="edge")


def central(faces, shape) -> object | None:
    """The face whose box centre is nearest the canvas's centre (the pasted photo's face)."""
    if not faces:
        return None
    cy, cx = shape[0] / 2, shape[1] / 2

    def off_centre(face) -> float:
        x1, y1, x2, y2 = face.box
        return ((x1 + x2) / 2 - cx) ** 2 + ((y1 + y2) / 2 - cy) ** 2

    return min(faces, key=off_centre)


def blurred(rgb: np.ndarray, radius: float) -> np.ndarray:
    """The photo out of focus: a Gaussian blur of `radius` px, set in a canvas as `shrunk` sets it."""
    from PIL import Image, ImageFilter

    return shrunk(np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius))), 1.0)


def measure(predictor, photos, sizes, label: str, spoil, widening: str) -> None:
    """One line of figures: each photo spoilt by `spoil(rgb, eye distance)` (None: left out) and answered
    as served, then again with the predictor's `widening` table (`small_faces` or `blurred_faces`) off."""
    table = getattr(predictor, widening)
    rows = []  # (found, age error, gender right, inside served, inside unwidened, widths)
    for start in range(0, len(photos), BATCH):
        batch = []
        for sample, size in zip(photos[start : start + BATCH], sizes[start : start + BATCH], strict=True):
            canvas = spoil(np.asarray(load_image(sample.path)), size)
            if canvas is not None:
                batch.append((sample, canvas))
        canvases = [canvas for _, canvas in batch]
        answers = predictor.predict_many(canvases)
        setattr(predictor, widening, None)  # the same photos, the same outputs, without the widening
        try:
            plain = predictor.predict_many(canvases)
        finally:
            setattr(predictor, widening, table)
        for (sample, canvas), faces, unwidened in zip(batch, answers, plain, strict=True):
            face = central(faces, canvas.shape)
            if face is None:
                rows.append((False,) + (np.nan,) * 6)
                continue
            other = central(unwidened, canvas.shape)
            low, high = other.age_low, other.age_high
            truth = sample.age
            rows.append(
                (
                    True,
                    abs(face.age - truth),
                    face.gender == sample.gender,
                    face.age_low <= truth <= face.age_high,
                    low <= truth <= high,
                    face.age_high - face.age_low,
                    high - low,
                )
            )
    found = np.array([r[0] for r in rows])
    kept = np.array([r[1:] for r in rows if r[0]], dtype=float)
    if not len(kept):
        print(f"{label}: {len(rows)} photos, no face found")
        return
    print(
        f"{label}: {len(rows)} photos, faces found {found.mean():.1%}; age MAE "
        f"{kept[:, 0].mean():.2f}, gender {kept[:, 1].mean():.1%}; range holds the true age "
        f"{kept[:, 2].mean():.1%} served (width {kept[:, 4].mean():.1f}) against "
        f"{kept[:, 3].mean():.1%} unwidened (width {kept[:, 5].mean():.1f})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--datasets-dir", default=str(DATASETS_DIR))
    parser.add_argument("--per-dataset", type=int, default=400, help="validation photos from each dataset")
    parser.add_argument(
        "--eyes", default="0,9,10,12,16", help="eye distances in the shrunk photo, px (0: the photo as it is)"
    )
    parser.add_argument(
        "--blurs",
        default="",
        help="blurs of the photo as it is: Gaussian radius as a share of its eye distance, e.g. 0.045,0.09",
    )
    args = parser.parse_args()

    from ml import Predictor

    predictor = Predictor.load(args.model_dir)
    print(
        f"model {predictor.model_version}; range scale {predictor.interval_scale}; small faces "
        f"{predictor.small_faces}; blurred faces {predictor.blurred_faces}"
    )
    photos = []
    for name in ("utkface", "aaf-train"):
        folder = Path(args.datasets_dir) / name
        if not (folder / "labels.csv").is_file():
            print(f"{folder} is absent: skipped")
            continue
        _, val = split(read_labels(folder))
        photos += val[: args.per_dataset]
    # each photo's face at full size: its eye distance
    sizes = []
    for start in range(0, len(photos), BATCH):
        rgbs = [np.asarray(load_image(s.path)) for s in photos[start : start + BATCH]]
        for faces in predictor.detector.detect_many(rgbs):
            sizes.append(eye_distance(faces[0].landmarks) if faces else 0.0)
    for eyes in [float(e) for e in args.eyes.split(",") if e]:

        def small(rgb, size, eyes=eyes):
            return shrunk(rgb, eyes / size if eyes else 1.0) if size > eyes else None

        measure(predictor, photos, sizes, f"eyes {eyes:4.1f} px", small, "small_faces")
    for blur in [float(b) for b in args.blurs.split(",") if b]:

        def soft(rgb, size, blur=blur):
            return blurred(rgb, blur * size) if size else None

        measure(predictor, photos, sizes, f"blur {blur:.3f} of the eye distance", soft, "blurred_faces")


if __name__ == "__main__":
    main()
