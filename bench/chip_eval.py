"""Validation figures of several models on the cached chips: compare models without the detector.

    python bench/chip_eval.py ml/models/default runs/a runs/b [--cache-dir var/cache]

For each model folder, the validation split's chips (the same cache `python -m ml train` reads, built on
first use) go through `ml.train.predict_chips` (the served test-time views, gender expert included) and
`ml.calibration.evaluate_chips` with the model's own range width; one line per model and dataset: age
MAE, CS@5, gender accuracy (and how many faces that is), range coverage. These are the figures each run's
`metrics.json` holds, but measured again on today's chips, so that models trained on older caches compare
fairly. End to end figures (detection included) come from `python -m ml evaluate`. Not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders (model.keras + manifest.json)")
    parser.add_argument("--cache-dir", default="var/cache")
    args = parser.parse_args()

    import keras

    import ml.model  # noqa: F401  (registers the custom layers)
    from ml.artifact import read_manifest
    from ml.calibration import evaluate_chips
    from ml.train import TrainConfig, _load_sets, predict_chips

    _, _, val_set = _load_sets(TrainConfig(cache_dir=args.cache_dir), True)
    for folder in args.models:
        manifest = read_manifest(folder)  # checks the file against its sha256, as the predictor does
        model = keras.models.load_model(folder / manifest["file"], compile=False)
        outputs = predict_chips(model, val_set.inputs())
        metrics = evaluate_chips(outputs, val_set, manifest["interval"]["scale"])
        for name, entry in metrics["datasets"].items():
            right = round(entry["gender_accuracy"] * entry["count"])
            print(
                f"{folder} {name}: MAE {entry['age_mae']:.2f}, CS@5 {entry['cs5']:.3f}, "
                f"gender {entry['gender_accuracy']:.2%} ({right} of {entry['count']}), "
                f"range coverage {entry['interval_coverage']:.1%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
