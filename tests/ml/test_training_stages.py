"""The fitting stages' parts on small real or synthetic data: optimiser, budget, doubted labels,
seeds, distillation, augmentation and batch-norm statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def test_pretrained_parts_can_learn_more_slowly():
    """`--polish-pretrained-lr-scale`: the optimizer's steps for the given variables shrink by that factor."""
    import keras

    from ml.training.fitting import scaled_adamw

    slow, fast = keras.layers.Dense(4, name="slow"), keras.layers.Dense(1, name="fast")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, fast(slow(inputs)))
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    model.compile(optimizer=scaled_adamw(1e-2, 0.0, slow.weights, 0.1), loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.random((64, 3)), rng.random((64, 1)), batch_size=64, epochs=1, verbose=0)
    moved = {v.path: float(np.abs(v.numpy() - before[v.path]).max()) for v in model.trainable_variables}
    # Adam's first step moves every weight by about the learning rate, whatever its gradient
    assert all(9e-3 < moved[name] < 1.1e-2 for name in moved if name.startswith("fast"))
    assert all(9e-4 < moved[name] < 1.1e-3 for name in moved if name.startswith("slow"))


def test_a_budget_is_shared_in_proportion_to_the_stages_work():
    from ml.training.fitting import stage_minutes

    assert stage_minutes(10, 3, 1) == pytest.approx(7.5)
    assert stage_minutes(10, 3, 0) == pytest.approx(10)


def test_a_label_is_doubted_only_where_both_opinions_contradict_it():
    from ml.training.losses import gender_doubts

    males = np.array([1, 1, 1, 0, 0, 0], np.float32)
    ours = np.array([0.05, 0.05, 0.50, 0.97, 0.97, 0.20])  # P(male)
    cydral = np.array([0.02, 0.60, 0.01, 0.99, 0.30, 0.99])
    assert gender_doubts(ours, cydral, males, 0.9).tolist() == [True, False, False, True, False, False]
    assert gender_doubts(ours, cydral, males, 0.99).tolist() == [False] * 6
    assert not gender_doubts(ours, cydral, males, 0.0).any()  # 0: every label trusted


def _synthetic_faces(ages: np.ndarray, males: np.ndarray):
    """A ChipSet of random-noise chips with these labels (for the fitting plumbing, not for accuracy)."""
    from ml.training.chipsets import ChipSet

    count = len(ages)
    return ChipSet(
        chips=np.random.default_rng(0).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8),
        ages=ages.astype(np.float32),
        males=males.astype(np.float32),
        datasets=np.array(["synthetic"] * count),
        keys=np.array([f"synthetic/{i}" for i in range(count)]),
        detected=np.ones(count, bool),
    )


def test_a_doubted_label_teaches_age_but_not_gender(tmp_path):
    import keras

    from ml.model import make_model
    from ml.training.config import TrainConfig
    from ml.training.feeding import make_trainer
    from ml.training.fitting import compile_trainer, fit_stage
    from ml.training.losses import gender_scales

    rng = np.random.default_rng(1)
    count = 32
    faces = _synthetic_faces(rng.integers(1, 90, count), rng.integers(0, 2, count))
    config = TrainConfig(out=str(tmp_path), batch_size=16, gender_balance=True)
    losses = {}
    for doubted in (np.ones(count, bool), None):
        keras.utils.set_random_seed(0)
        trainer, _ = make_trainer(make_model(64, (8, 16), (1, 1)), config, 0)
        compile_trainer(trainer, config, 1e-3, 1, 2, 0.0)
        scale = gender_scales(faces, config, doubted)
        fit_stage(trainer, faces, faces, config, 1, [], gender_scale=scale, seed=0)
        losses[doubted is None] = trainer.history.history
    doubting, trusting = losses[False], losses[True]
    assert doubting["gender_loss"][0] == 0.0 and doubting["age_loss"][0] > 0
    assert trusting["gender_loss"][0] > 0.1


def test_each_stage_draws_its_own_batches(tmp_path):
    """No stage replays another's batches (same faces, same order, same augmentation), nor does a run
    that continues a model replay the batches that model was trained on."""
    from ml.model import make_model
    from ml.training.config import TrainConfig
    from ml.training.feeding import fit_inputs, make_trainer
    from ml.training.fitting import stage_seed

    config = TrainConfig(out=str(tmp_path), batch_size=8)
    seeds = {stage: stage_seed(config, stage) for stage in ("trunk", "heads", "epoch", "polish")}
    assert len(set(seeds.values())) == 4
    assert stage_seed(config, "epoch") == seeds["epoch"]  # reproducible
    assert stage_seed(TrainConfig(seed=7), "epoch") != seeds["epoch"]
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "manifest.json").write_text(json.dumps({"sha256": "ab" * 32}))
    continued = TrainConfig(init_from=str(parent))
    assert stage_seed(continued, "polish") != seeds["polish"]

    count = 64
    faces = _synthetic_faces(np.arange(count), np.zeros(count))
    weights = np.ones(count, np.float32)

    def order(seed):  # the ages (0..63, one per face) of the stage's first batch
        data, _ = fit_inputs(faces, faces, weights, config, seed)
        return np.asarray(next(iter(data))[1]["age"]).tolist()

    assert order(seeds["epoch"]) == order(seeds["epoch"])
    assert order(seeds["epoch"]) != order(seeds["polish"])
    # the augmentation (inside the trainer on TensorFlow) draws differently too
    batch = np.repeat(faces.chips[:1].astype(np.float32), 4, axis=0)
    augmented = {}
    for stage in ("epoch", "polish"):
        trainer, _ = make_trainer(make_model(64, (8, 16), (1, 1)), config, seeds[stage])
        augment = trainer.get_layer("augment")
        augmented[stage] = np.asarray(augment(batch, training=True))
    assert np.abs(augmented["epoch"] - augmented["polish"]).mean() > 1.0


def test_distillation_losses_mix_the_teachers_targets_into_the_labels():
    import keras
    from keras import ops

    from ml.training.losses import make_age_loss, make_distilled_gender_loss

    ages = np.array([[30.0], [4.0]], np.float32)
    probs = np.full((2, 101), 1 / 101, np.float32)
    probs[0, 28:33] += 0.05
    probs /= probs.sum(axis=1, keepdims=True)
    teacher = np.zeros((2, 101), np.float32)
    teacher[:, 50] = 1.0
    with_teacher = np.concatenate([ages, teacher], axis=1)
    plain = ops.convert_to_numpy(make_age_loss(0.1)(ages, probs))
    assert np.allclose(ops.convert_to_numpy(make_age_loss(0.1, 0.0)(with_teacher, probs)), plain)
    taught = ops.convert_to_numpy(make_age_loss(0.1, 1.0)(with_teacher, probs))
    l1 = 0.1 * np.abs((probs * np.arange(101)).sum(axis=1) - ages[:, 0])
    assert np.allclose(taught, -np.log(probs[:, 50]) + l1, rtol=1e-5)
    half = ops.convert_to_numpy(make_age_loss(0.1, 0.5)(with_teacher, probs))
    assert np.allclose(half, (plain + taught) / 2, rtol=1e-5)  # cross-entropy is linear in the target

    labels = np.array([[1.0], [0.0]], np.float32)
    male = np.array([[0.8], [0.3]], np.float32)
    keras_bce = keras.losses.BinaryCrossentropy(label_smoothing=0.05, reduction=None)
    both = np.array([[1.0, 0.2], [0.0, 0.9]], np.float32)
    untaught = ops.convert_to_numpy(make_distilled_gender_loss(0.05, 0.0)(both, male))
    assert np.allclose(untaught, ops.convert_to_numpy(keras_bce(labels, male)), rtol=1e-4)
    only_teacher = ops.convert_to_numpy(make_distilled_gender_loss(0.05, 1.0)(both, male))
    teacher_male = np.array([[0.2], [0.9]], np.float32)
    assert np.allclose(only_teacher, ops.convert_to_numpy(keras_bce(teacher_male, male)), rtol=1e-4)


def test_a_student_follows_its_teacher_against_the_labels(tmp_path):
    """Labels say every face is a woman, the teacher says man: fitted on the teacher alone the student's
    P(male) rises; on the labels alone it falls. Its reported accuracy is against the labels."""
    import keras

    from ml.model import make_model
    from ml.training.chipsets import predict_chips
    from ml.training.config import TrainConfig
    from ml.training.feeding import make_trainer
    from ml.training.fitting import compile_trainer, fit_stage

    count = 32
    faces = _synthetic_faces(np.full(count, 30), np.zeros(count))
    faces.soft_ages = np.eye(101, dtype=np.float32)[np.full(count, 30)]
    faces.soft_males = np.full(count, 0.95, np.float32)
    males = {}
    for weight in (1.0, 0.0):
        config = TrainConfig(out=str(tmp_path), batch_size=16, distill_weight=weight)
        keras.utils.set_random_seed(0)
        model = make_model(64, (8, 16), (1, 1))
        trainer, _ = make_trainer(model, config, 0)
        compile_trainer(trainer, config, 1e-2, 3, 2, 0.0, distill=True)
        fit_stage(trainer, faces, faces, config, 3, [], seed=0)
        males[weight] = float(predict_chips(model, faces.chips)["gender"].mean())
        accuracy = trainer.history.history["gender_acc"][-1]
        assert accuracy == pytest.approx(
            float((predict_chips(model, faces.chips)["gender"] < 0.5).mean()), abs=0.2
        )
    assert males[1.0] > 0.6 and males[0.0] < 0.4


def test_degradation_blurs_coarsens_and_greys_training_chips_only(astronaut):
    """`--degrade`: on the real astronaut, stacked as the fused trainer stacks both framings, some chips
    come out softer (less fine detail), some grey (each 3-channel chip on its own), and inference is
    untouched; the option reaches the trainer's augmenter, and is off by default."""
    from ml.model import make_model
    from ml.training.augment import RandomDegrade
    from ml.training.config import TrainConfig
    from ml.training.feeding import make_trainer

    chip = np.asarray(Image.fromarray(astronaut).crop((140, 20, 320, 200)).resize((64, 64)), np.float32)
    stack = np.repeat(np.concatenate([chip, chip], axis=-1)[None], 256, axis=0)
    layer = RandomDegrade(blur=0.3, low_res=0.15, grey=0.1, seed=5)
    assert np.array_equal(np.asarray(layer(stack)), stack)  # inference: identity
    out = np.asarray(layer(stack, training=True))

    def detail(x):  # mean absolute second difference along rows, per chip
        return np.abs(np.diff(x, n=2, axis=2)).mean(axis=(1, 2, 3))

    softer = detail(out) < 0.9 * detail(stack)
    assert 0.2 < softer.mean() < 0.6  # blur (30%, at a random strength) or low resolution (15%)
    for group in (out[..., :3], out[..., 3:]):
        grey = np.all(np.abs(group - group[..., :1]) < 1e-3, axis=(1, 2, 3))
        assert 0.04 < grey.mean() < 0.18
        assert not np.allclose(group[grey], stack[grey][..., :3])  # grey, not untouched colour
    untouched = np.all(np.abs(out - stack) < 1e-3, axis=(1, 2, 3))
    assert 0.35 < untouched.mean() < 0.75

    assert not TrainConfig().degrade
    for degrade in (False, True):
        trainer, _ = make_trainer(make_model(64, (8, 16), (1, 1)), TrainConfig(degrade=degrade), 1)
        names = [layer.name for layer in trainer.get_layer("augment").layers]
        assert ("degrade" in names) == degrade


def test_batchnorm_statistics_come_from_the_resampled_chips_unless_told_otherwise():
    """The finishing step re-estimates the trunk's batch norm on the training faces cut the v4 way
    (`batchnorm_chips` "resampled", the default), or on the served chips; without resampled chips (a
    GPU machine's pack) on the served ones."""
    from dataclasses import replace

    import keras

    from ml.model import make_model
    from ml.training.config import TrainConfig
    from ml.training.finishing import recalibrate_batchnorm, recalibrate_on_training_faces

    faces = _synthetic_faces(np.arange(48), np.zeros(48))
    faces = replace(faces, resampled=(faces.chips // 2).astype(np.uint8))  # another cut: darker
    start = make_model(64, (8, 16), (1, 1)).get_weights()

    def first_means(recalibrate) -> np.ndarray:
        model = make_model(64, (8, 16), (1, 1))
        model.set_weights(start)
        recalibrate(model)
        norms = [
            layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
        ]
        return np.asarray(norms[0].moving_mean)

    def on(chips, config):
        return first_means(
            lambda model: recalibrate_batchnorm(model, chips.astype(np.float32), seed=config.seed)
        )

    config = TrainConfig()
    assert config.batchnorm_chips == "resampled"
    assert not np.allclose(on(faces.resampled, config), on(faces.chips, config), rtol=1e-2)
    for chip_set, setting, expected in (
        (faces, "resampled", faces.resampled),
        (faces, "served", faces.chips),
        (replace(faces, resampled=None), "resampled", faces.chips),
    ):
        chosen = replace(config, batchnorm_chips=setting)
        finished = first_means(lambda model, s=chip_set, c=chosen: recalibrate_on_training_faces(model, s, c))
        np.testing.assert_allclose(finished, on(expected, chosen), rtol=1e-5)


def test_gender_balance_weighs_both_genders_the_same_in_each_dataset_and_age_bucket():
    from ml.training.config import TrainConfig
    from ml.training.losses import gender_balance_weights, gender_scales

    # utkface 50-59: 7 men, 3 women; aaf 50-59: 2 men, 2 women; utkface 20-29: 4 women, no man
    datasets = np.array(["utkface"] * 10 + ["aaf"] * 4 + ["utkface"] * 4)
    ages = np.array([55] * 14 + [25] * 4)
    males = np.array([1] * 7 + [0] * 3 + [1, 0, 1, 0] + [0] * 4)
    weights = gender_balance_weights(datasets, ages, males)
    skewed = slice(0, 10)
    assert weights[skewed][males[skewed] == 1].sum() == pytest.approx(
        weights[skewed][males[skewed] == 0].sum()
    )
    assert weights[0] == pytest.approx(10 / 14) and weights[9] == pytest.approx(10 / 6)
    assert np.all(weights[10:14] == 1.0)  # already balanced: untouched
    assert np.all(weights[14:] == 0.5)  # one gender only: n / (2 n), not blown up
    faces = _synthetic_faces(ages, males)
    faces.datasets = datasets
    assert gender_scales(faces, TrainConfig(), None) is None  # off by default
    doubted = np.zeros(len(ages), bool)
    doubted[0] = True
    scale = gender_scales(faces, TrainConfig(gender_balance=True), doubted)
    assert scale[0] == 0.0 and scale[1] == pytest.approx(10 / 14) and scale[9] == pytest.approx(10 / 6)
