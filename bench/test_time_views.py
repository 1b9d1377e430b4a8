"""What each of the model's test-time views buys, end to end on the validation photos.

    python bench/test_time_views.py [--data ../shared/datasets/aaf-train ...] [--limit N]

Every validation photo goes through the served detector and alignment once (the largest face, else the
`whole_image_fallback` face, as `python -m ml evaluate` scores it); the model then reads all four views
(`ml.model.VIEWS`) of every face, and each subset of views is scored from those outputs: age MAE, CS@5,
gender accuracy, range coverage (the served range width and widening), and the model's milliseconds per
face for that subset. Figures, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUBSETS = (
    ("chip",),
    ("chip", "mirror"),
    ("chip", "zoom"),
    ("chip", "mirror", "zoom"),
    ("chip", "mirror", "zoom", "zoom_mirror"),
)


def faces_of(predictor, samples):
    """Chips (dict of (N, S, S, 3) uint8), eye distances and labels of each sample's scored face."""
    from ml.alignment import eye_distance
    from ml.errors import ImageError
    from ml.images import load_image

    chips, eyes, kept = [], [], []
    for sample in samples:
        try:
            rgb = np.asarray(load_image(sample.path))
        except ImageError:
            continue
        found = predictor.detector.detect(rgb)
        face = found[0] if found else predictor.detector.fallback_face(rgb)
        chips.append(predictor.chips_of(rgb, face.landmarks))
        eyes.append(eye_distance(face.landmarks))
        kept.append(sample)
    batch = {name: np.concatenate([c[name] for c in chips]) for name in chips[0]}
    return batch, np.array(eyes), kept


def view_outputs(predictor, batch, size: int = 64):
    """The model's (age (4, N, 101), P(male) (4, N)) for every view of every face."""
    from ml.model import VIEWS, test_time_views

    ages, males = [], []
    for start in range(0, len(batch["image"]), size):
        part = {k: np.asarray(v[start : start + size], np.float32) for k, v in batch.items()}
        views = test_time_views(part)
        out = predictor.model(views if len(views) > 1 else views["image"], training=False)
        ages.append(np.asarray(out["age"]).reshape(len(VIEWS), -1, out["age"].shape[-1]))
        males.append(np.asarray(out["gender"]).reshape(len(VIEWS), -1))
    return np.concatenate(ages, axis=1), np.concatenate(males, axis=1)


def score(predictor, age_probs, male, batch, eyes, samples) -> dict[str, float]:
    from ml.calibration import age_interval, range_widening

    scales = predictor.interval_scale * range_widening(
        batch, list(eyes), predictor.small_faces, predictor.blurred_faces
    )
    age, low, high = age_interval(age_probs, scales)
    truth = np.array([s.age for s in samples])
    errors = np.round(age, 1) - truth
    gender = np.where(male >= 0.5, "male", "female")
    return {
        "mae": float(np.mean(np.abs(errors))),
        "cs5": float(np.mean(np.abs(errors) <= 5)),
        "gender": float(np.mean(gender == np.array([s.gender for s in samples]))),
        "coverage": float(np.mean((low <= truth) & (truth <= high))),
    }


def model_ms_per_face(predictor, views: tuple[str, ...], repeat: int = 10, batch: int = 16) -> float:
    import tensorflow as tf

    from ml.model import merge_views, test_time_views

    specs = predictor.input_specs
    signature = [{name: tf.TensorSpec([None, s, s, 3], tf.float32) for name, (_, s) in specs.items()}]

    @tf.function(input_signature=signature)
    def infer(chips):
        made = test_time_views(chips, views)
        return merge_views(predictor.model(made, training=False), len(views))

    rng = np.random.default_rng(0)
    chips = {n: rng.integers(0, 256, (batch, s, s, 3)).astype(np.float32) for n, (_, s) in specs.items()}
    infer(chips)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        infer(chips)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000 / batch


def main(argv: list[str] | None = None) -> int:
    from ml import Predictor
    from ml.model import VIEWS
    from ml.training.data import DATASETS_DIR, read_labels, split
    from ml.training.evaluate import spread_subset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", type=Path, help="labelled folders (validation split)")
    parser.add_argument("--limit", type=int, default=None, help="at most N photos per dataset")
    args = parser.parse_args(argv)
    predictor = Predictor.load()
    print("model ms/face in a batch of 16, by views:")
    for subset in SUBSETS:
        print(f"  {'+'.join(subset)}: {model_ms_per_face(predictor, subset):.2f}")
    for folder in args.data or [DATASETS_DIR / "aaf-train", DATASETS_DIR / "utkface"]:
        samples = spread_subset(split(read_labels(folder))[1], args.limit)
        batch, eyes, kept = faces_of(predictor, samples)
        ages, males = view_outputs(predictor, batch)
        print(f"\n{folder.name} (val, {len(kept)} photos)\n| views | age MAE | CS@5 | gender | range holds |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for subset in SUBSETS:
            index = [VIEWS.index(name) for name in subset]
            got = score(predictor, ages[index].mean(0), males[index].mean(0), batch, eyes, kept)
            print(
                f"| {'+'.join(subset)} | {got['mae']:.3f} | {got['cs5']:.3f} | {got['gender']:.4f} |"
                f" {got['coverage']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
