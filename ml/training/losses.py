"""What a stage minimises: the age and gender losses (with distillation's soft targets), their metrics,
and each face's weight in them."""

from __future__ import annotations

import numpy as np

from ml.training.chipsets import ChipSet
from ml.training.config import TrainConfig


def age_weights(ages: np.ndarray) -> np.ndarray:
    """Inverse square-root frequency of each 5-year age bin, mean 1, clipped: rare ages count more."""
    bins = np.minimum(ages // 5, 20).astype(int)
    counts = np.bincount(bins, minlength=21).astype(np.float64)
    weights = 1.0 / np.sqrt(np.maximum(counts[bins], 1))
    weights = weights / weights.mean()
    return np.clip(weights, 0.5, 3.0).astype(np.float32)


def dataset_weights(datasets: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Each face's dataset's share to the power −`power`, mean 1: a smaller dataset counts more per face
    (All-Age-Faces, 22% of the faces and mostly East Asian, weighs 1.9× a UTKFace face at 0.5, 3.5× at 1,
    where both datasets weigh the same in all)."""
    names, index = np.unique(datasets, return_inverse=True)
    counts = np.bincount(index, minlength=len(names)).astype(np.float64)
    weights = counts[index] ** -power
    return (weights / weights.mean()).astype(np.float32)


def gender_balance_weights(datasets: np.ndarray, ages: np.ndarray, males: np.ndarray) -> np.ndarray:
    """Gender-loss weights that give both genders the same total weight within each dataset × age
    bucket (`ml.training.data.AGE_BUCKETS`), clipped to 0.5–2: n_cell / (2 n_gender in cell), so that
    no dataset's gender skew by age can teach a gender (measured in ml/MODEL_CARD.md).
    """
    from ml.training.data import age_bucket

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


def gender_doubts(ours: np.ndarray, theirs: np.ndarray, males: np.ndarray, threshold: float) -> np.ndarray:
    """Which gender labels to doubt: both P(male)s (two independent opinions) give the other gender at
    least `threshold` (what such faces turned out to be: ml/MODEL_CARD.md)."""
    if not threshold:
        return np.zeros(len(males), bool)
    male = males >= 0.5
    return np.where(male, ours <= 1 - threshold, ours >= threshold) & np.where(
        male, theirs <= 1 - threshold, theirs >= threshold
    )


def gender_scales(train_set: ChipSet, config: TrainConfig, doubted: np.ndarray | None) -> np.ndarray | None:
    """Each training face's factor in the gender loss (on top of its age and dataset weight): 0 for a
    doubted label, `gender_balance_weights` with `gender_balance`; None where every factor is 1."""
    scale = np.ones(len(train_set.ages), np.float32)
    if config.gender_balance:
        scale *= gender_balance_weights(train_set.datasets, train_set.ages, train_set.males)
    if doubted is not None:  # a doubted label teaches age only
        scale[doubted] = 0.0
    return None if np.all(scale == 1.0) else scale


def age_sigma(ages):
    """Width (years) of the target age distribution: narrow for children, wider for the old."""
    from keras import ops

    return ops.clip(1.0 + 0.06 * ages, 1.0, 5.0)


def split_targets(y_true):
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
        ages, teacher = split_targets(y_true)
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
    return ops.abs(expected - ops.reshape(split_targets(y_true)[0], (-1,)))


def make_distilled_gender_loss(label_smoothing: float, distill_weight: float):
    """Binary cross-entropy against the label (smoothed as Keras smooths it) mixed with the teachers'
    P(male) by `distill_weight`; targets (N, 2): label, teachers'."""
    from keras import ops

    def gender_loss(y_true, male):
        label, teacher = split_targets(y_true)
        target = (1 - distill_weight) * label + distill_weight * teacher
        target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        male = ops.clip(ops.reshape(male, (-1, 1)), 1e-7, 1 - 1e-7)
        return -ops.mean(target * ops.log(male) + (1 - target) * ops.log(1 - male), axis=-1)

    return gender_loss


def gender_accuracy(y_true, male):
    """Share of faces whose label (first column of distilling targets) P(male) ≥ 0.5 gets right."""
    from keras import ops

    label = ops.reshape(split_targets(y_true)[0], (-1,))
    return ops.cast(ops.equal(label >= 0.5, ops.reshape(male, (-1,)) >= 0.5), "float32")
