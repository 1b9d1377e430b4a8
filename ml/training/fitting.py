"""One stage's fitting: optimiser and schedule, seeds, progress lines, the time budget and `fit`."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ml.training.chipsets import ChipSet
from ml.training.config import TrainConfig
from ml.training.feeding import augmented_batches, fit_inputs
from ml.training.losses import (
    age_mae,
    age_weights,
    dataset_weights,
    gender_accuracy,
    make_age_loss,
    make_distilled_gender_loss,
)


class EpochLine:
    """One progress line per epoch (no per-batch bars in logs)."""

    def __new__(cls, epochs: int, label: str = "epoch"):
        import keras

        class _Line(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                parts = [f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, (int, float))]
                print(
                    f"{label} {epoch + 1}/{epochs} {time.time() - self.started:.0f}s " + " ".join(parts),
                    flush=True,
                )

        return _Line()


class TimeLimit:
    """Keeps training inside a time budget.

    After the second epoch (the first one pays for compilation) it predicts how many epochs fit. Where
    fewer than planned fit, it shortens the cosine schedule so that the learning rate still anneals by
    the last epoch that fits (effective on eager backends such as PyTorch; a compiled TensorFlow or JAX
    step keeps its schedule) and stops there.
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
                    if max(fits, 3) < planned:  # at least 3 epochs, and the budget's 1.1 still stops
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


#: A trunk epoch costs about this share of a fused epoch (2.5 against 4 minutes on the 2-core CPU).
TRUNK_EPOCH_COST = 0.6


def stage_minutes(remaining: float, epochs: float, later_epochs: float) -> float:
    """The share of `remaining` minutes a stage of `epochs` gets when `later_epochs` (in the same units)
    follow it: in proportion, so that a run given `max_minutes` leaves time for every later stage."""
    return remaining * epochs / max(1e-9, epochs + later_epochs)


def announce_budget(label: str, remaining: float, epochs: float, later_epochs: float) -> float:
    """`stage_minutes`, announced on the run's log."""
    minutes = stage_minutes(remaining, epochs, later_epochs)
    print(f"time budget: {label} {minutes * 60:.3f}s of {remaining * 60:.3f}s left", flush=True)
    return minutes


def scaled_adamw(schedule, weight_decay: float, slow_variables=(), slow_scale: float = 1.0):
    """AdamW whose steps for `slow_variables` are `slow_scale` times the others' (layer-wise rates).

    Scaling the gradients would not do this: Adam's step does not depend on the gradient's scale.
    Weight decay (5e-4 of the rate, decoupled) stays at the full rate for all.
    """
    import keras

    # by identity, as given and as the backend's own variable (TensorFlow updates `variable.value`)
    pairs = ((variable, getattr(variable, "value", variable)) for variable in slow_variables)
    slow = {id(v) for pair in pairs for v in pair} if slow_scale != 1.0 else set()

    class _ScaledAdamW(keras.optimizers.AdamW):
        def update_step(self, gradient, variable, learning_rate):
            if id(variable) in slow:
                learning_rate = learning_rate * slow_scale
            super().update_step(gradient, variable, learning_rate)

    return _ScaledAdamW(schedule, weight_decay=weight_decay, clipnorm=2.0, name="scaled_adamw")


def compile_trainer(
    trainer,
    config: TrainConfig,
    learning_rate: float,
    epochs: int,
    steps: int,
    warmup_epochs: float,
    slow_variables=(),
    slow_scale: float = 1.0,
    distill: bool = False,
):
    import keras

    warmup = int(warmup_epochs * steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 20 if warmup else learning_rate,
        decay_steps=max(1, epochs * steps - warmup),
        alpha=0.01,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    gender_loss = keras.losses.BinaryCrossentropy(label_smoothing=config.gender_label_smoothing)
    gender_metric = keras.metrics.BinaryAccuracy(name="acc")
    if distill:  # targets carry the teachers' outputs beside the labels (`fit_inputs`)
        gender_loss = make_distilled_gender_loss(config.gender_label_smoothing, config.distill_weight)
        gender_metric = keras.metrics.MeanMetricWrapper(gender_accuracy, name="acc")
    trainer.compile(
        optimizer=scaled_adamw(schedule, config.weight_decay, slow_variables, slow_scale),
        loss={
            "age": make_age_loss(config.age_l1_weight, config.distill_weight if distill else 0.0),
            "gender": gender_loss,
        },
        loss_weights={"age": 1.0, "gender": config.gender_loss_weight},
        metrics={"age": [age_mae], "gender": [gender_metric]},
    )
    return schedule, warmup


def stage_seed(config: TrainConfig, stage: str) -> int:
    """The seed of one stage's shuffling and augmentation: its own for every stage, and for a run that
    continues a model (`init_from`) mixed with that model's sha256. (Dropout draws from generators seeded
    when the model is built, with the run's seed; their streams run on from stage to stage.)
    Why: a stage that replays an earlier stage's batches learns less from them (ml/MODEL_CARD.md).
    """
    parent = ""
    if config.init_from:
        manifest = Path(config.init_from) / "manifest.json"
        parent = (
            json.loads(manifest.read_text()).get("sha256", "") if manifest.is_file() else config.init_from
        )
    digest = hashlib.sha256(f"{config.seed}/{stage}/{parent}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def fit_stage(
    trainer,
    train_set: ChipSet,
    val_set: ChipSet,
    config: TrainConfig,
    epochs: int,
    callbacks,
    dataset_balance: float = 0.0,
    augmenter=None,
    gender_scale: np.ndarray | None = None,
    *,
    seed: int,
) -> None:
    """One stage's `epochs` on `train_set`; `seed` draws its shuffling (and, on JAX, its augmentation;
    on TensorFlow the trainer's augmenter was seeded by `make_trainer`). `gender_scale` multiplies each
    face's weight in the gender loss only (`gender_scales`)."""
    weights = age_weights(train_set.ages)
    if dataset_balance:
        weights = weights * dataset_weights(train_set.datasets, dataset_balance)
    if gender_scale is not None:
        weights = {"age": weights, "gender": (weights * gender_scale).astype(np.float32)}
    fit_data, val_data = fit_inputs(train_set, val_set, weights, config, seed)
    # BackupAndRestore leaves the epoch it resumed from on the model, and Keras would start the next
    # fit() of the same model there too (a second schedule skipped whole after a resumed first one)
    trainer._initial_epoch = None
    if augmenter is not None:  # JAX: augmented batch by batch outside the training step (`make_trainer`)
        x, y, w = fit_data
        trainer.fit(
            augmented_batches(x, y, w, augmenter, config.batch_size, seed, config.resampled_share),
            steps_per_epoch=int(np.ceil(len(train_set.ages) / config.batch_size)),
            epochs=epochs,
            validation_data=val_data,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,  # the batches come shuffled
        )
    elif isinstance(fit_data, tuple):
        x, y, w = fit_data
        trainer.fit(
            x,
            y,
            sample_weight=w,
            batch_size=config.batch_size,
            epochs=epochs,
            validation_data=val_data,
            callbacks=callbacks,
            verbose=0,
            shuffle=True,
        )
    else:
        trainer.fit(fit_data, epochs=epochs, validation_data=val_data, callbacks=callbacks, verbose=0)
