"""Feeding a stage: targets and inputs as `tf.data` (TensorFlow) or as arrays and augmented batches
(JAX, PyTorch), and the trainer, the model behind its augmenter."""

from __future__ import annotations

import numpy as np

from ml.training.chipsets import ChipSet
from ml.training.config import TrainConfig


def training_targets(faces: ChipSet) -> dict[str, np.ndarray]:
    """The labels; with teachers' outputs, each label followed by its soft target (`split_targets`)."""
    if faces.soft_ages is None:
        return {"age": faces.ages, "gender": faces.males}
    return {
        "age": np.concatenate([faces.ages[:, None], faces.soft_ages], axis=1).astype(np.float32),
        "gender": np.stack([faces.males, faces.soft_males], axis=1).astype(np.float32),
    }


def fit_inputs(train_set: ChipSet, val_set: ChipSet, weights, config: TrainConfig, seed: int):
    import keras

    y_train, y_val = training_targets(train_set), training_targets(val_set)
    x_train = (
        train_set.chips if train_set.faces is None else {"image": train_set.chips, "face": train_set.faces}
    )
    x_val = val_set.chips if val_set.faces is None else {"image": val_set.chips, "face": val_set.faces}
    share = config.resampled_share if train_set.faces is not None else 0.0
    if share and train_set.resampled is None:  # e.g. a GPU machine's pack, which holds served chips only
        raise ValueError(
            "--resampled-share needs the faces cut the v4 way (ml.training.chips.resampled_cache)"
        )
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


def augmented_batches(
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


def make_trainer(model, config: TrainConfig, seed: int):
    """(the model as trained, an augmenter to run outside it or None) for one stage:
    `ml.training.augment.make_augmenter`'s flips, tilts, shifts and light (with `degrade`, blur, low
    resolution and greyscale too) before `model`. A fused model's two framings are augmented together,
    stacked as 6 channels, so that both get the same transformation.
    `seed` (the stage's, `stage_seed`) seeds the augmenter and, set as the global seed here, the
    graph-level half of `tf.data`'s shuffling seed.

    On TensorFlow the augmenter is the trainer's first layer (fed by `tf.data`). On JAX it runs as a
    compiled function of its own on each batch (`augmented_batches`): inside JAX's compiled training
    step it made each step some 200 times slower (ml/MODEL_CARD.md).
    """
    import keras
    from keras import layers

    from ml.training.augment import make_augmenter

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
