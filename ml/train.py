"""Training: cached aligned chips → augmented batches → the two-headed network → artifact + metrics.

    python -m ml train --data ../shared/datasets/utkface --data ../shared/datasets/aaf-train --out DIR

Runs on the TensorFlow backend with a tf.data pipeline (the shipping configuration); the same code runs
on Keras's JAX or PyTorch backends for a GPU machine without TensorFlow (arrays are then fed directly).
Interrupted runs resume from `DIR/backup` (Keras BackupAndRestore) when started again with the same DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.data import DATASETS_DIR, Sample, split

#: Clean training faces used to re-estimate batch-norm statistics after fitting.
RECALIBRATION_FACES = 8192

DEFAULT_DATA = (str(DATASETS_DIR / "utkface"), str(DATASETS_DIR / "aaf-train"))


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=lambda: list(DEFAULT_DATA))
    out: str = "runs/latest"
    cache_dir: str = "var/cache"
    input_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks: tuple[int, ...] = (1, 2, 2, 2)
    epochs: int = 28
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    age_l1_weight: float = 0.1
    gender_label_smoothing: float = 0.05
    seed: int = 1337
    version: str = "1.0.0"
    max_minutes: float | None = None  # stop early (keeping the weights) when training runs past this
    init_from: str | None = None  # a model folder whose weights start this run (a longer schedule in parts)


# ---------------------------------------------------------------- data


@dataclass
class ChipSet:
    chips: np.ndarray  # (N, S, S, 3) uint8
    ages: np.ndarray  # (N,) float32
    males: np.ndarray  # (N,) float32, 1 = male
    datasets: np.ndarray  # (N,) str
    keys: np.ndarray  # (N,) str, "dataset/file"
    detected: np.ndarray  # (N,) bool

    def take(self, index: np.ndarray) -> ChipSet:
        return ChipSet(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


def load_chips(folders: list[str], size: int, cache_dir: str) -> ChipSet:
    from ml.chips import build_cache

    parts = []
    for folder in folders:
        path = build_cache(folder, size, cache_dir)
        with np.load(path) as data:
            name = Path(folder).name
            files = data["files"]
            parts.append(
                ChipSet(
                    chips=data["chips"],
                    ages=data["ages"].astype(np.float32),
                    males=data["genders"].astype(np.float32),
                    datasets=np.array([name] * len(files)),
                    keys=np.array([f"{name}/{f}" for f in files]),
                    detected=data["detected"],
                )
            )
    return ChipSet(*(np.concatenate([getattr(p, f) for p in parts]) for f in ChipSet.__dataclass_fields__))


def split_chips(chips: ChipSet) -> tuple[ChipSet, ChipSet]:
    """The fixed split of `ml.data.split`, applied to cached chips by key."""
    samples = [
        Sample(path=Path(key), age=int(age), gender="male" if male else "female", dataset=dataset)
        for key, age, male, dataset in zip(chips.keys, chips.ages, chips.males, chips.datasets, strict=True)
    ]
    _, val = split(samples)
    val_keys = {s.key for s in val}
    is_val = np.array([key in val_keys for key in chips.keys])
    return chips.take(np.flatnonzero(~is_val)), chips.take(np.flatnonzero(is_val))


def age_weights(ages: np.ndarray) -> np.ndarray:
    """Inverse square-root frequency of each 5-year age bin, mean 1, clipped: rare ages count more."""
    bins = np.minimum(ages // 5, 20).astype(int)
    counts = np.bincount(bins, minlength=21).astype(np.float64)
    weights = 1.0 / np.sqrt(np.maximum(counts[bins], 1))
    weights = weights / weights.mean()
    return np.clip(weights, 0.5, 3.0).astype(np.float32)


# ---------------------------------------------------------------- losses and metrics


def age_sigma(ages):
    """Width (years) of the target age distribution: narrow for children, wider for the old."""
    from keras import ops

    return ops.clip(1.0 + 0.06 * ages, 1.0, 5.0)


def make_age_loss(l1_weight: float):
    from keras import ops

    from ml.model import AGE_CLASSES

    grid = ops.arange(AGE_CLASSES, dtype="float32")

    def age_loss(y_true, probs):
        ages = ops.reshape(ops.cast(y_true, "float32"), (-1, 1))
        sigma = age_sigma(ages)
        target = ops.exp(-0.5 * ops.square((grid - ages) / sigma))
        target = target / ops.sum(target, axis=-1, keepdims=True)
        cross_entropy = -ops.sum(target * ops.log(ops.clip(probs, 1e-7, 1.0)), axis=-1)
        expected = ops.sum(probs * grid, axis=-1)
        return cross_entropy + l1_weight * ops.abs(expected - ops.reshape(ages, (-1,)))

    return age_loss


def age_mae(y_true, probs):
    from keras import ops

    from ml.model import AGE_CLASSES

    expected = ops.sum(probs * ops.arange(AGE_CLASSES, dtype="float32"), axis=-1)
    return ops.abs(expected - ops.reshape(ops.cast(y_true, "float32"), (-1,)))


# ---------------------------------------------------------------- training


class EpochLine:
    """One progress line per epoch (no per-batch bars in logs)."""

    def __new__(cls, epochs: int):
        import keras

        class _Line(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                parts = [f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, (int, float))]
                print(
                    f"epoch {epoch + 1}/{epochs} {time.time() - self.started:.0f}s " + " ".join(parts),
                    flush=True,
                )

        return _Line()


class TimeLimit:
    """Keeps training inside a time budget.

    After the second epoch (the first one pays for compilation) it predicts how many epochs fit. Where
    fewer than planned fit, it shortens the cosine schedule so that the learning rate still anneals by
    the last epoch that fits (effective on eager backends such as PyTorch; a compiled TensorFlow graph
    keeps its schedule) and stops there.
    """

    def __new__(cls, seconds: float, started: float, schedule, steps_per_epoch: int, warmup: int):
        import keras

        class _Limit(keras.callbacks.Callback):
            last_epoch: int | None = None

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch_started = time.time()

            def on_epoch_end(self, epoch, logs=None):
                now = time.time()
                if epoch == 1 and self.last_epoch is None:
                    per_epoch = now - self.epoch_started
                    fits = 2 + int((seconds - (now - started)) // per_epoch)
                    planned = self.params.get("epochs") or fits
                    if fits < planned:
                        self.last_epoch = max(fits, 3)
                        schedule.decay_steps = max(1, self.last_epoch * steps_per_epoch - warmup)
                        print(
                            f"time budget: {per_epoch:.0f}s an epoch, so {self.last_epoch} of {planned} "
                            f"epochs fit in {seconds / 60:.0f} min; schedule shortened",
                            flush=True,
                        )
                if (self.last_epoch and epoch + 1 >= self.last_epoch) or now - started > seconds * 1.1:
                    self.model.stop_training = True

        return _Limit()


def train(config: TrainConfig) -> dict:
    import keras

    from ml.model import make_augmenter, make_model

    keras.utils.set_random_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    chips = load_chips(config.data, config.input_size, config.cache_dir)
    train_set, val_set = split_chips(chips)
    print(
        f"train {len(train_set.ages)} faces, validation {len(val_set.ages)} faces "
        f"(detected {chips.detected.mean():.1%}); backend {keras.backend.backend()}",
        flush=True,
    )

    model = make_model(config.input_size, tuple(config.widths), tuple(config.blocks))
    if config.init_from:
        model.set_weights(
            keras.models.load_model(Path(config.init_from) / "model.keras", compile=False).get_weights()
        )
        print(f"weights initialised from {config.init_from}", flush=True)
    inputs = keras.Input((config.input_size, config.input_size, 3), name="image")
    trainer = keras.Model(inputs, model(make_augmenter(config.seed)(inputs)), name="trainer")
    steps_per_epoch = int(np.ceil(len(train_set.ages) / config.batch_size))
    warmup = int(config.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 20,
        decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
        alpha=0.01,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )
    trainer.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay, clipnorm=2.0),
        loss={
            "age": make_age_loss(config.age_l1_weight),
            "gender": keras.losses.BinaryCrossentropy(label_smoothing=config.gender_label_smoothing),
        },
        loss_weights={"age": 1.0, "gender": 1.0},
        metrics={"age": [age_mae], "gender": [keras.metrics.BinaryAccuracy(name="acc")]},
    )
    weights = age_weights(train_set.ages)
    callbacks = [keras.callbacks.BackupAndRestore(str(out / "backup")), EpochLine(config.epochs)]
    if config.max_minutes:
        callbacks.append(TimeLimit(config.max_minutes * 60, started, schedule, steps_per_epoch, warmup))
    fit_data, val_data = _inputs(train_set, val_set, weights, config)
    if isinstance(fit_data, tuple):
        x, y, w = fit_data
        trainer.fit(
            x,
            y,
            sample_weight=w,
            batch_size=config.batch_size,
            epochs=config.epochs,
            validation_data=val_data,
            callbacks=callbacks,
            verbose=0,
            shuffle=True,
        )
    else:
        trainer.fit(fit_data, epochs=config.epochs, validation_data=val_data, callbacks=callbacks, verbose=0)
    return finish(model, train_set, val_set, config, train_seconds=time.time() - started)


def finish(model, train_set: ChipSet, val_set: ChipSet, config: TrainConfig, *, train_seconds: float) -> dict:
    """After fitting: batch-norm statistics from clean faces, the interval fitted on validation, artifact."""
    from ml.artifact import save_artifact
    from ml.calibration import evaluate_chips, fit_interval_scale

    out = Path(config.out)
    pick = np.random.default_rng(config.seed).permutation(len(train_set.chips))[:RECALIBRATION_FACES]
    recalibrate_batchnorm(model, train_set.chips[pick], seed=config.seed)
    val_probs = predict_chips(model, val_set.chips)
    interval_scale = fit_interval_scale(val_probs["age"], val_set.ages, coverage=0.8)
    metrics = evaluate_chips(val_probs, val_set, interval_scale)
    metrics["training_seconds"] = round(train_seconds, 1)
    names = sorted(set(train_set.datasets) | set(val_set.datasets))
    manifest = save_artifact(
        model,
        out,
        config=asdict(config),
        interval_scale=interval_scale,
        metrics=metrics,
        training_data={
            name: {
                "train": int((train_set.datasets == name).sum()),
                "validation": int((val_set.datasets == name).sum()),
            }
            for name in names
        },
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    summary = {"out": str(out), "sha256": manifest["sha256"], "validation": metrics["overall"]}
    print(json.dumps(summary), flush=True)
    return metrics


def _inputs(train_set: ChipSet, val_set: ChipSet, weights: np.ndarray, config: TrainConfig):
    import keras

    y_train = {"age": train_set.ages, "gender": train_set.males}
    y_val = {"age": val_set.ages, "gender": val_set.males}
    if keras.backend.backend() != "tensorflow":
        return (train_set.chips, y_train, weights), (val_set.chips, y_val)
    import tensorflow as tf

    train_ds = (
        tf.data.Dataset.from_tensor_slices((train_set.chips, y_train, weights))
        .shuffle(len(weights), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((val_set.chips, y_val)).batch(256).prefetch(tf.data.AUTOTUNE)
    return train_ds, val_ds


def recalibrate_batchnorm(model, chips: np.ndarray, batch_size: int = 128, seed: int = 0) -> None:
    """Re-estimate batch-norm statistics on clean (unaugmented) faces, in place.

    Training ends with moving averages taken from augmented batches under a still-moving network; a
    cumulative average over clean training chips with the final weights matches what inference sees.
    """
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    order = np.random.default_rng(seed).permutation(len(chips))
    for step, start in enumerate(range(0, len(order), batch_size)):
        for layer in norms:
            layer.momentum = step / (step + 1.0)  # running mean of the batch statistics
        batch = chips[np.sort(order[start : start + batch_size])].astype(np.float32)
        model(batch, training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def predict_chips(model, chips: np.ndarray, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Inference-mode outputs for chips, averaged over the same test-time views the predictor uses."""
    from ml.model import merge_views, test_time_views

    ages, males = [], []
    for start in range(0, len(chips), batch_size):
        batch = chips[start : start + batch_size].astype(np.float32)
        out = model.predict_on_batch(np.asarray(test_time_views(batch)))
        age, male = merge_views(out)
        ages.append(np.asarray(age))
        males.append(np.asarray(male))
    return {"age": np.concatenate(ages), "gender": np.concatenate(males)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument(
        "--data", action="append", help="folder with labels.csv (repeat); default: the shared sets"
    )
    parser.add_argument(
        "--out", default=defaults.out, help="output folder (model.keras, manifest.json, metrics.json)"
    )
    parser.add_argument("--cache-dir", default=defaults.cache_dir, help="where aligned chips are cached")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--input-size", type=int, default=defaults.input_size)
    parser.add_argument("--widths", default=",".join(map(str, defaults.widths)), help="channels per stage")
    parser.add_argument(
        "--blocks", default=",".join(map(str, defaults.blocks)), help="residual blocks per stage"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--version", default=defaults.version)
    parser.add_argument("--init-from", default=None, help="model folder whose weights start this run")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop after the epoch that passes this"
    )


def run(args: argparse.Namespace) -> int:
    config = TrainConfig(
        data=args.data or list(DEFAULT_DATA),
        out=args.out,
        cache_dir=args.cache_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        input_size=args.input_size,
        widths=tuple(int(v) for v in args.widths.split(",")),
        blocks=tuple(int(v) for v in args.blocks.split(",")),
        seed=args.seed,
        version=args.version,
        max_minutes=args.max_minutes,
        init_from=args.init_from,
    )
    missing = [
        folder
        for folder in config.data
        if not (Path(folder) / "labels.csv").is_file()
        and not (Path(config.cache_dir) / f"{Path(folder).name}-{config.input_size}.npz").is_file()
    ]
    if missing:
        print(f"error: no labels.csv in {', '.join(missing)}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    train(config)
    return 0


__all__ = ["TrainConfig", "add_arguments", "predict_chips", "run", "train"]
