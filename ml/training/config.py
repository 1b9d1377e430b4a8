"""A training run's settings (`TrainConfig`) and the command-line options generated from them.

Every field with a `help` in its metadata is an option `--field-name` of `python -m ml train` (and of
`python -m ml.training.remote`); its type, default and help come from the field, so a new setting is
one new field. Fields without `help` are settings of the recipe that no command line changes.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields

from ml.training.data import DATASETS_DIR

DEFAULT_DATA = (str(DATASETS_DIR / "utkface"), str(DATASETS_DIR / "aaf-train"))


def option(default=MISSING, help: str | None = None, *, factory=MISSING, **argparse_options):
    """A `TrainConfig` field that is a command-line option: `help` its help, `argparse_options` what
    `ArgumentParser.add_argument` takes beyond the generated flag, type and default (`flag` replaces
    the flag; `append` repeats the option into a list)."""
    return field(default=default, default_factory=factory, metadata={"help": help, "cli": argparse_options})


def _comma_ints(text: str) -> tuple[int, ...]:
    return tuple(int(value) for value in text.split(","))


@dataclass
class TrainConfig:
    """`architecture` "fused" (the default, the shipped model) runs two stages: our ResNet trunk alone
    (`trunk_epochs` at `trunk_learning_rate`, into OUT/trunk, skipped with `trunk_from`), then the trunk
    next to the Cydral networks (`ml.model.make_fused_model`): `head_epochs` with the pretrained parts
    frozen, then `epochs` of fine-tuning everything at `learning_rate`, then `polish_epochs` more on a
    second, cooler cosine schedule peaking at `polish_learning_rate`; with `gender_expert`, the original
    Cydral gender network is finally blended into the gender output (`ml.model.with_gender_expert`), its
    weight fitted by log loss (`ml.training.finishing.add_gender_expert`). "resnet" is the trunk stage
    alone. In the second schedule the ported Cydral networks learn at `polish_pretrained_lr_scale` times
    the rate of the rest, and each face is weighted by its dataset's share to the power
    −`polish_dataset_balance` as well as by its age.

    `calibration_share` of each dataset's training faces can be held out of every stage's fitting: the
    age range's width and the gender expert's weight are then fitted on these faces, so that nothing at
    all is fitted on the validation split. The default, 0 (the shipped model), fits the expert's weight
    on training faces and the range's width (one number) on validation faces.
    """

    data: list[str] = option(
        help="folder with labels.csv (repeat); default: the shared sets",
        factory=lambda: list(DEFAULT_DATA),
        append=True,
    )
    out: str = option("runs/latest", "output folder (model.keras, manifest.json, metrics.json)")
    cache_dir: str = option("var/cache", "where aligned chips are cached")
    architecture: str = option(
        "fused",
        "fused: trunk, then trunk + Cydral networks (the shipped model); resnet: the trunk alone",
        choices=("fused", "resnet"),
    )
    input_size: int = option(64, "chip size in pixels (the fused model takes 64)")
    widths: tuple[int, ...] = option((32, 64, 128, 256), "channels per stage")
    blocks: tuple[int, ...] = option((1, 2, 2, 2), "residual blocks per stage")
    epochs: int = option(4, "epochs of the last stage")
    batch_size: int = option(64, "faces per training batch")
    learning_rate: float = option(3e-4, "peak learning rate of the last stage")
    head_epochs: int = option(1, "fused: epochs of the new heads alone, the pretrained parts frozen")
    head_learning_rate: float = option(2e-3, "fused: learning rate of the heads' warm-up")
    trunk_epochs: int = option(28, "fused: epochs of stage 1, the trunk alone")
    trunk_learning_rate: float = option(3e-3, "fused: peak learning rate of stage 1")
    trunk_from: str | None = option(None, "a trained trunk (model folder): skip stage 1")
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    age_l1_weight: float = 0.1
    gender_label_smoothing: float = 0.05
    gender_loss_weight: float = option(1.0, "weight of the gender loss (the age loss weighs 1)")
    seed: int = option(1337, "seed of the split's calibration faces, shuffling and augmentation")
    # a retrain is a new draw of the shipped recipe, not the shipped model: name a release with --version
    version: str = option("2.3.0.dev0", "the model's version in its manifest")
    max_minutes: float | None = option(
        None, "the whole run's budget: each stage stops after the epoch that passes its share"
    )
    init_from: str | None = option(None, "model folder whose weights start this run")
    gender_expert: bool = option(
        True,
        "fused: do not blend the original Cydral gender network into the gender output",
        flag="--no-gender-expert",
    )
    calibration_share: float = option(
        0.0, "share of training faces held out to fit the range and the gender expert (0: none)"
    )
    polish_epochs: int = option(3, "epochs of the second schedule")
    polish_learning_rate: float = option(1e-4, "peak learning rate of the second schedule")
    polish_pretrained_lr_scale: float = option(
        0.3, "second schedule: learning-rate multiplier for the ported Cydral networks"
    )
    polish_dataset_balance: float = option(
        0.5,
        "second schedule: weight each face by its dataset's share ** -POWER too (0: not at all)",
        metavar="POWER",
    )
    gender_doubt: float = option(
        0.0,
        "fused stages: learn no gender from a training face whose label the model before them and the "
        "untouched Cydral gender network both contradict with probability >= P (0: trust every label)",
        metavar="P",
    )
    gender_balance: bool = option(
        False,
        "fused stages: weigh both genders the same in the gender loss within each dataset × age bucket",
    )
    teachers: tuple[str, ...] = option(
        (),
        "fused stages: distil from this model folder (repeat; their outputs are averaged)",
        flag="--teacher",
        append=True,
        metavar="DIR",
    )
    distill_weight: float = option(
        0.5, "share of the teachers' soft targets in the fused stages' targets (with --teacher)"
    )
    resampled_share: float = option(
        0.0,
        "fused stages: show each training face with probability P as chips cut the v4 way "
        "(ml.training.chips.resample_chips) instead of the served chips",
        metavar="P",
    )
    batchnorm_chips: str = option(
        "resampled",
        "the chips the finishing step re-estimates batch-norm statistics on: cut the v4 way "
        "(default, reads validation ages better) or as served",
        choices=("resampled", "served"),
    )
    degrade: bool = option(
        False, "augment with blur, low resolution and greyscale as well (ml.training.augment.RandomDegrade)"
    )
    scan: float = option(
        0.0,
        "every stage: this share of the training chips is shown as scanned old prints (faded colour, "
        "sepia, grey, low contrast, grain, blur, JPEG; ml.training.scans.RandomScan); 0: none",
        metavar="SHARE",
    )
    train_webp: int = option(
        0,
        "fitting stages: each training chip after one trip through WebP at QUALITY, as on a GPU "
        "machine (ml.training.remote); 0, the default: the clean chips",
        metavar="QUALITY",
    )


def _base_type(hint):
    """`str` of `str | None`; the hint itself otherwise."""
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per `TrainConfig` field that has a help (`option`)."""
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for item in fields(TrainConfig):
        if not item.metadata.get("help"):
            continue
        extra = dict(item.metadata["cli"])
        flag = extra.pop("flag", "--" + item.name.replace("_", "-"))
        default = getattr(defaults, item.name)
        kind = _base_type(hints[item.name])
        spec: dict = {"dest": item.name, "help": item.metadata["help"]}
        if extra.pop("append", False):
            spec.update(action="append", default=None)  # None: the field's default (`config_from_args`)
        elif kind is bool:
            negated = flag.startswith("--no-")
            spec.update(action="store_false" if negated else argparse.BooleanOptionalAction)
            if not negated:
                spec["default"] = default
        elif typing.get_origin(kind) is tuple:
            spec.update(type=_comma_ints, default=default)
        else:
            spec.update(type=kind, default=default)
        parser.add_argument(flag, **{**spec, **extra})


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed `add_arguments` options (each option is the field of the same name;
    a repeated option given no time takes the field's default)."""
    defaults = asdict(TrainConfig())
    values = {}
    for item in fields(TrainConfig):
        value = getattr(args, item.name, None)
        if value is None or not item.metadata.get("help"):
            continue
        if item.metadata["cli"].get("append"):
            value = type(defaults[item.name])(value) if value else defaults[item.name]
        values[item.name] = value
    return TrainConfig(**values)
