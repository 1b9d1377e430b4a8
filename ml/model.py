"""The age & gender network (Keras 3) and its saved artifact.

One convolutional trunk (residual, batch-norm momentum 0.9 so that inference statistics keep up), two
heads: `age` is a softmax over whole years 0..100 (expected value = the estimate, quantiles = the
range), `gender` is the probability of "male". Pixel scaling is part of the model, so callers feed
uint8-range RGB chips.
"""

from __future__ import annotations

import keras
from keras import layers

AGE_CLASSES = 101  # 0..100 years
#: Test-time views: the chip, its mirror, a 0.9× centre zoom and that zoom's mirror (`test_time_views`).
VIEWS = ("chip", "mirror", "zoom", "zoom_mirror")
TTA_VIEWS = len(VIEWS)
_TTA_ZOOM = 0.9


@keras.saving.register_keras_serializable(package="agegender")
class ChannelPad(layers.Layer):
    """Append `extra` zero channels (dlib's residual join onto a wider branch, see `ml.training.cydral`)."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra

    def call(self, x):
        from keras import ops

        # zeros concatenated rather than ops.pad: TensorFlow 2.21's oneDNN graph rewrite crashes
        # (segmentation fault) on the gradient of pad → add → relu, the Cydral residual join
        zeros = ops.zeros_like(x[..., :1])
        return ops.concatenate([x, ops.repeat(zeros, self.extra, axis=-1)], axis=-1)

    def compute_output_shape(self, shape):
        return (*shape[:-1], shape[-1] + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


@keras.saving.register_keras_serializable(package="agegender")
class LogitBlend(layers.Layer):
    """P(male) mixed from our head's probability and a second network's two-class logits, in logit space.

    `sigmoid((1 - weight) * logit(p) + weight * (z[male] - z[female]))`: with `weight` 0 it is our head
    alone, with 1 the other network alone. `weight` is fitted after training
    (`ml.training.finishing.add_gender_expert`).
    """

    def __init__(self, weight: float, male_index: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)
        self.male_index = int(male_index)

    def call(self, inputs):
        from keras import ops

        male, logits = inputs
        male = ops.clip(male, 1e-6, 1.0 - 1e-6)
        ours = ops.log(male) - ops.log1p(-male)
        m, f = self.male_index, 1 - self.male_index
        theirs = logits[:, m : m + 1] - logits[:, f : f + 1]
        return ops.sigmoid((1.0 - self.weight) * ours + self.weight * theirs)

    def compute_output_shape(self, shapes):
        return shapes[0]

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "male_index": self.male_index}


def _conv_bn(x, filters: int, kernel: int = 3, stride: int = 1, act: bool = True, name: str = ""):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if act else x


def _block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = _conv_bn(x, filters, 3, stride, name=f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, act=False, name=f"{name}_b")
    if stride != 1 or shortcut.shape[-1] != filters:
        if stride != 1:
            shortcut = layers.AveragePooling2D(stride, padding="same", name=f"{name}_pool")(shortcut)
        shortcut = _conv_bn(shortcut, filters, 1, 1, act=False, name=f"{name}_proj")
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def make_model(
    input_size: int = 64,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks: tuple[int, ...] = (1, 2, 2, 2),
    dropout: float = 0.3,
) -> keras.Model:
    """A ResNet-style trunk sized for CPU inference, with an age-distribution head and a gender head."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = _conv_bn(x, widths[0], 3, 2, name="stem1")
    x = _conv_bn(x, widths[0], 3, 1, name="stem2")
    for stage, (width, count) in enumerate(zip(widths, blocks, strict=False)):
        for index in range(count):
            stride = 2 if index == 0 and stage > 0 else 1
            x = _block(x, width, stride, name=f"s{stage}b{index}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    age = layers.Dense(256, activation="relu", name="age_hidden")(x)
    age = layers.Dense(AGE_CLASSES, activation="softmax", name="age")(age)
    gender = layers.Dense(64, activation="relu", name="gender_hidden")(x)
    gender = layers.Dense(1, activation="sigmoid", name="gender")(gender)
    return keras.Model(inputs, {"age": age, "gender": gender}, name="agegender_resnet")


def make_fused_model(trunk: keras.Model, age_net: keras.Model, gender_net: keras.Model, dropout: float = 0.3):
    """Our trunk and the Cydral age and gender networks side by side, under one pair of new heads.

    Inputs: `image`, our loose 64-px chip (geometry "chip"), into `trunk` (a `make_model` network, up to
    its pooled features); `face`, the tight 64-px chip (geometry "face", dlib's framing) into the Cydral
    age network and, pooled to 32 px, into the Cydral gender network (`ml.training.cydral.port`). The three
    feature vectors (256 + 256 + 16) are normalised, concatenated and read by the same heads as
    `make_model`'s.
    """
    size = trunk.input_shape[1]
    image = keras.Input((size, size, 3), name="image")
    face = keras.Input((age_net.input_shape[1],) * 2 + (3,), name="face")
    ours = keras.Model(trunk.inputs, trunk.get_layer("pool").output, name="trunk")(image)
    age_features = age_net(face)["features"]
    small = layers.AveragePooling2D(2, name="face_small")(face)
    gender_features = gender_net(small)["features"]
    x = layers.Concatenate(name="fuse")(
        [
            layers.LayerNormalization(name="trunk_norm")(ours),
            layers.LayerNormalization(name="cydral_age_norm")(age_features),
            layers.LayerNormalization(name="cydral_gender_norm")(gender_features),
        ]
    )
    x = layers.Dropout(dropout, name="drop")(x)
    age = layers.Dense(256, activation="relu", name="age_hidden")(x)
    age = layers.Dense(AGE_CLASSES, activation="softmax", name="age")(age)
    gender = layers.Dense(64, activation="relu", name="gender_hidden")(x)
    gender = layers.Dense(1, activation="sigmoid", name="gender")(gender)
    return keras.Model({"image": image, "face": face}, {"age": age, "gender": gender}, name="agegender_fused")


def expert_logits(expert: keras.Model, face):
    """The gender expert's two logits for the tight face chip, which it reads pooled to half size."""
    return expert(layers.AveragePooling2D(2, name="expert_face_small")(face))["logits"]


def with_gender_expert(model: keras.Model, expert: keras.Model, weight: float) -> keras.Model:
    """`model` (a fused model) with its gender output blended with a frozen `expert`'s (`LogitBlend`).

    The expert is the original Cydral gender network (`ml.training.cydral.port`), which reads the tight face
    chip pooled to 32 px as it was trained to; fine-tuning inside the fused model made our gender head
    better on UTKFace, while the untouched network stays better on East Asian faces (All-Age-Faces), and
    the blend keeps most of both. Age is passed through unchanged.
    """
    inputs = {name: keras.Input(tensor.shape[1:], name=name) for name, tensor in model.input.items()}
    outputs = model(inputs)
    expert.trainable = False
    gender = LogitBlend(weight, name="gender")([outputs["gender"], expert_logits(expert, inputs["face"])])
    age = layers.Identity(name="age")(outputs["age"])
    return keras.Model(inputs, {"age": age, "gender": gender}, name=f"{model.name}_expert")


def backbones(model: keras.Model) -> list:
    """The pretrained parts of a fused model (frozen while its new heads warm up)."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def test_time_views(chips, views: tuple[str, ...] = VIEWS):
    """(N, S, S, 3) chips → (len(views)·N, S, S, 3), the `views` stacked in their order: "chip" (as cut),
    "mirror", "zoom" (0.9× centre zoom), "zoom_mirror". Default: all four, as training validates.

    A dict of such arrays (a fused model's inputs) gives a dict, each input with the same views.
    """
    from keras import ops

    if isinstance(chips, dict):
        return {name: test_time_views(value, views) for name, value in chips.items()}

    made = {"chip": chips, "mirror": ops.flip(chips, axis=2)}
    if "zoom" in views or "zoom_mirror" in views:
        size = chips.shape[1]
        crop = int(round(size * _TTA_ZOOM))
        offset = (size - crop) // 2
        zoomed = ops.image.resize(chips[:, offset : offset + crop, offset : offset + crop, :], (size, size))
        made.update(zoom=zoomed, zoom_mirror=ops.flip(zoomed, axis=2))
    if len(views) == 1:
        return made[views[0]]
    return ops.concatenate([made[name] for name in views], axis=0)


def merge_views(outputs: dict, count: int = TTA_VIEWS):
    """Average the model's outputs over the `count` views made by `test_time_views`."""
    from keras import ops

    age = ops.mean(ops.reshape(outputs["age"], (count, -1, AGE_CLASSES)), axis=0)
    male = ops.mean(ops.reshape(outputs["gender"], (count, -1)), axis=0)
    return age, male
