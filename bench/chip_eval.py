"""Validation figures of several models on the cached chips: compare models without the detector.

    python bench/chip_eval.py ml/models/default runs/a runs/b [--cache-dir var/cache]
        [--ensemble] [--gender-by-bucket]

For each model folder, the validation split's chips (the same cache `python -m ml train` reads, built on
first use) go through `ml.train.predict_chips` (the served test-time views, gender expert included) and
`ml.calibration.evaluate_chips` with the model's own range width; one line per model and dataset: age
MAE, CS@5, gender accuracy (and how many faces that is), range coverage. These are the figures each run's
`metrics.json` holds, but measured again on today's chips, so that models trained on older caches compare
fairly. Since chip pipeline v5 the cached chips are the ones the service cuts, so these figures come
within about 0.1 year and a face or two of the end-to-end ones. `--ensemble` adds the average of all
the models' outputs (age distributions and P(male); its range width is the members' mean), what a
student distilled from them (`--teacher`) could at best reach. `--gender-by-bucket` adds, per dataset
and age bucket, the labels' share of men, the share the model calls men, and its errors each way. End
to end figures (detection included) come from `python -m ml evaluate`. Not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def report(label: str, outputs: dict, val_set, scale: float, buckets: np.ndarray | None) -> None:
    """One line per dataset; with `buckets` (each validation face's age bucket), men's share and the
    errors each way per bucket too."""
    from ml.calibration import evaluate_chips
    from ml.data import AGE_BUCKETS

    metrics = evaluate_chips(outputs, val_set, scale)
    called_male = outputs["gender"].reshape(-1) >= 0.5
    for name, entry in metrics["datasets"].items():
        right = round(entry["gender_accuracy"] * entry["count"])
        print(
            f"{label} {name}: MAE {entry['age_mae']:.2f}, CS@5 {entry['cs5']:.3f}, "
            f"gender {entry['gender_accuracy']:.2%} ({right} of {entry['count']}), "
            f"range coverage {entry['interval_coverage']:.1%}",
            flush=True,
        )
        if buckets is None:
            continue
        for bucket, _, _ in AGE_BUCKETS:
            inside = (val_set.datasets == name) & (buckets == bucket)
            male = val_set.males[inside] >= 0.5
            called = called_male[inside]
            print(
                f"    {bucket:>5}: {inside.sum():4d} faces, men {male.mean():.0%}, called men "
                f"{called.mean():.0%}; women called men {(~male & called).sum()}, men called women "
                f"{(male & ~called).sum()}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders (model.keras + manifest.json)")
    parser.add_argument("--cache-dir", default="var/cache")
    parser.add_argument("--ensemble", action="store_true", help="also the average of the models' outputs")
    parser.add_argument("--gender-by-bucket", action="store_true", help="also men's share and errors by age")
    args = parser.parse_args()

    import keras

    import ml.model  # noqa: F401  (registers the custom layers)
    from ml.artifact import read_manifest
    from ml.data import age_bucket
    from ml.train import TrainConfig, _load_sets, predict_chips

    _, _, val_set = _load_sets(TrainConfig(cache_dir=args.cache_dir), True)
    buckets = np.array([age_bucket(age) for age in val_set.ages]) if args.gender_by_bucket else None
    members, scales = [], []
    for folder in args.models:
        manifest = read_manifest(folder)  # checks the file against its sha256, as the predictor does
        model = keras.models.load_model(folder / manifest["file"], compile=False)
        outputs = predict_chips(model, val_set.inputs())
        report(str(folder), outputs, val_set, manifest["interval"]["scale"], buckets)
        members.append(outputs)
        scales.append(manifest["interval"]["scale"])
    if args.ensemble:
        average = {key: np.mean([outputs[key] for outputs in members], axis=0) for key in ("age", "gender")}
        report("ensemble", average, val_set, float(np.mean(scales)), buckets)


if __name__ == "__main__":
    main()
