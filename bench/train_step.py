"""Training speed of the trunk on this machine's Keras backend, augmentation inside the step or not.

    KERAS_BACKEND=jax python bench/train_step.py [--steps N] [--batch-size B]

Three figures, milliseconds per step of B faces (64 px, random pixels, the recipe's losses and
optimizer), after a first step that pays for compilation:
- `plain`: the trunk alone, no augmentation;
- `inside`: `ml.training.augment.make_augmenter` as the trainer's first layer (what TensorFlow runs);
- `outside` (JAX only): the trainer without it, fed by `ml.training.feeding.augmented_batches` (what
  JAX runs).

Figures measured on a lent H100 are in ml/MODEL_CARD.md. Figures, not pass/fail: this is not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import keras

    from ml.model import make_model
    from ml.training.augment import make_augmenter
    from ml.training.config import TrainConfig
    from ml.training.feeding import augmented_batches
    from ml.training.fitting import compile_trainer
    from ml.training.losses import age_weights

    config = TrainConfig(batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    count = args.batch_size * args.steps
    x = rng.integers(0, 256, (count, 64, 64, 3)).astype(np.uint8)
    y = {
        "age": rng.integers(0, 90, count).astype(np.float32),
        "gender": rng.integers(0, 2, count).astype(np.float32),
    }
    weights = age_weights(y["age"])
    print(f"backend {keras.backend.backend()}, {args.steps} steps of {args.batch_size} faces", flush=True)
    modes = ("plain", "inside", "outside") if keras.backend.backend() == "jax" else ("plain", "inside")
    for mode in modes:
        model = make_model()
        image = keras.Input((64, 64, 3), name="image")
        trainer = keras.Model(image, model(make_augmenter()(image) if mode == "inside" else image))
        compile_trainer(trainer, config, 1e-3, 1, args.steps, warmup_epochs=0)
        batches = None
        if mode == "outside":
            batches = augmented_batches(x, y, weights, make_augmenter(), args.batch_size, seed=0)
        started = time.perf_counter()
        fit_stage(trainer, 1, x, y, weights, args.batch_size, batches)
        compiled = time.perf_counter() - started
        started = time.perf_counter()
        fit_stage(trainer, args.steps, x, y, weights, args.batch_size, batches)
        per_step = 1000 * (time.perf_counter() - started) / args.steps
        print(f"{mode:8s} {per_step:8.1f} ms a step  (first step, compiling: {compiled:.1f} s)", flush=True)


def fit_stage(trainer, steps: int, x, y: dict, weights, batch_size: int, batches=None) -> None:
    if batches is not None:
        trainer.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        return
    n = steps * batch_size
    labels = {name: value[:n] for name, value in y.items()}
    trainer.fit(x[:n], labels, sample_weight=weights[:n], batch_size=batch_size, epochs=1, verbose=0)


if __name__ == "__main__":
    main()
