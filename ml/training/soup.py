"""A model whose weights lie between a finished model and a fine-tuning of it (WiSE-FT, Wortsman et al.
2022): `(1 - alpha) * base + alpha * tuned`, weight by weight, batch-norm statistics included.

    python -m ml.training.soup ml/models/default runs/c 0.5 runs/c50

Both models must have the same architecture, the tuned one having started from the base (`--init-from`),
so that the two lie in one basin and their average is a model too. The fine-tuning brings its
robustness (scanned prints), the base keeps its figures on clean faces. The average keeps the base's
range calibration (`interval` in the manifest); its validation figures are measured again on the cached
chips and written to `metrics.json` and the manifest, as a training run does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def average_weights(base: list[np.ndarray], tuned: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """Weight by weight `(1 - alpha) * base + alpha * tuned`, in each weight's own dtype."""
    if [w.shape for w in base] != [w.shape for w in tuned]:
        raise ValueError("the two models differ in architecture: no average of their weights")
    return [((1.0 - alpha) * b + alpha * t).astype(b.dtype) for b, t in zip(base, tuned, strict=True)]


def soup(base_dir: Path, tuned_dir: Path, alpha: float, out: Path, version: str, cache_dir: str) -> dict:
    """Write the averaged model to `out` (model.keras, manifest.json, metrics.json); returns its manifest."""
    import keras

    import ml.model  # noqa: F401  (registers the custom layers)
    from ml.artifact import read_manifest, sha256, write_manifest
    from ml.calibration import range_widening
    from ml.training.calibration import evaluate_chips
    from ml.training.chipsets import load_chips, predict_chips, split_chips
    from ml.training.config import TrainConfig

    manifest = read_manifest(base_dir)
    tuned_manifest = read_manifest(tuned_dir)
    model = keras.models.load_model(base_dir / manifest["file"], compile=False)
    tuned = keras.models.load_model(tuned_dir / tuned_manifest["file"], compile=False)
    model.set_weights(average_weights(model.get_weights(), tuned.get_weights(), alpha))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.keras"
    model.save(path)

    config = TrainConfig(cache_dir=cache_dir)
    _, val_set = split_chips(load_chips(config.data, config.input_size, config.cache_dir, faces=True))
    inputs = val_set.inputs()
    interval = manifest["interval"]
    scale = interval["scale"] * range_widening(inputs, None, None, interval.get("blurred_faces"))
    metrics = evaluate_chips(predict_chips(model, inputs), val_set, scale)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    manifest.update(
        version=version,
        sha256=sha256(path),
        size_bytes=path.stat().st_size,
        metrics=metrics,
        soup={
            "base": {"version": manifest["version"], "sha256": manifest["sha256"]},
            "tuned": {
                "folder": str(tuned_dir),
                "sha256": tuned_manifest["sha256"],
                "config": tuned_manifest["config"],
            },
            "alpha": alpha,
        },
    )
    write_manifest(out, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.training.soup", description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the finished model folder the tuned one started from")
    parser.add_argument("tuned", type=Path, help="the fine-tuned model folder")
    parser.add_argument("alpha", type=float, help="the tuned model's share, 0 to 1")
    parser.add_argument("out", type=Path, help="where the averaged model is written")
    parser.add_argument("--version", default="2.3.0.dev0", help="the new model's version")
    parser.add_argument("--cache-dir", default="var/cache", help="the chip cache (validation figures)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        parser.error("alpha is a share: 0 to 1")
    manifest = soup(args.base, args.tuned, args.alpha, args.out, args.version, args.cache_dir)
    for name, entry in manifest["metrics"]["datasets"].items():
        print(f"{name}: age MAE {entry['age_mae']:.2f}, gender {entry['gender_accuracy']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
