"""Training-time augmentation: what real uploads do to a face that the datasets' crops rarely show."""

from __future__ import annotations

import keras
from keras import layers


class RandomDegrade(layers.Layer):
    """Training only: each chip is blurred with probability `blur` (a Gaussian of σ 1.2 px mixed in at a
    random strength), reduced in resolution with probability `low_res` (shrunk to half size and
    enlarged back, as a face of a quarter of the pixels would be cut) and made grey with probability
    `grey` (each 3-channel chip of a stack separately), each drawn on its own, so that some chips get
    two or three: the soft, small and black-and-white faces real uploads bring and the datasets' crisp
    crops rarely show. Identity at inference."""

    def __init__(self, blur: float = 0.3, low_res: float = 0.15, grey: float = 0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.blur, self.low_res, self.grey = blur, low_res, grey
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        from keras import ops

        if not training:
            return x
        n, height, width, channels = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
        draws = keras.random.uniform((n, 4), seed=self.seed_generator)
        taps = ops.exp(-0.5 * (ops.arange(-2, 3, dtype="float32") / 1.2) ** 2)
        kernel = ops.outer(taps, taps) / ops.sum(taps) ** 2
        kernel = ops.tile(ops.reshape(kernel, (5, 5, 1, 1)), (1, 1, channels, 1))
        blurred = ops.depthwise_conv(x, kernel, padding="same")
        strength = ops.where(draws[:, 0] < self.blur, draws[:, 1], 0.0)
        x = x + ops.reshape(strength, (-1, 1, 1, 1)) * (blurred - x)
        small = ops.image.resize(x, (height // 2, width // 2), interpolation="bilinear", antialias=True)
        coarse = ops.image.resize(small, (height, width), interpolation="bilinear")
        x = ops.where(ops.reshape(draws[:, 2] < self.low_res, (-1, 1, 1, 1)), coarse, x)
        groups = ops.reshape(x, (-1, height, width, channels // 3, 3))
        luma = ops.sum(groups * ops.convert_to_tensor([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        grey = ops.reshape(ops.repeat(luma, 3, axis=-1), (-1, height, width, channels))
        return ops.where(ops.reshape(draws[:, 3] < self.grey, (-1, 1, 1, 1)), grey, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "blur": self.blur,
            "low_res": self.low_res,
            "grey": self.grey,
            "seed": self.seed,
        }


def make_augmenter(seed: int = 1337, degrade: bool = False) -> keras.Sequential:
    """Training-time augmentation matching real uploads: framing, flips, tilts and light; with
    `degrade`, also blur, low resolution and greyscale (`RandomDegrade`)."""
    steps = [
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(0.03, fill_mode="reflect", seed=seed + 1),
        layers.RandomZoom((-0.12, 0.12), fill_mode="reflect", seed=seed + 2),
        layers.RandomTranslation(0.06, 0.06, fill_mode="reflect", seed=seed + 3),
        layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 4),
        layers.RandomContrast(0.2, value_range=(0, 255), seed=seed + 5),
    ]
    if degrade:
        steps.append(RandomDegrade(seed=seed + 6, name="degrade"))
    return keras.Sequential(steps, name="augment")
