"""The cached faces a run trains and validates on (`ChipSet`), their fixed split, held-out calibration
faces and the teachers' soft targets, and a model's outputs for them."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ml.training.config import TrainConfig
from ml.training.data import Sample, split


@dataclass
class ChipSet:
    """Faces as the model reads them, with their labels: row i of every array is face i."""

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
        `resampled`, the same faces cut the v4 way (`ml.training.chips.resample_chips`) instead."""
        chips, faces = (self.resampled, self.resampled_faces) if resampled else (self.chips, self.faces)
        if faces is None:
            return chips[index].astype(np.float32)
        return {"image": chips[index].astype(np.float32), "face": faces[index].astype(np.float32)}


def load_chips(
    folders: list[str], size: int, cache_dir: str, faces: bool = False, resampled: bool = False
) -> ChipSet:
    """Cached chips of these folders; with `faces`, also the tight framing, aligned at 64 px (the cache's);
    with `resampled`, both cut another way too (`ml.training.chips.resampled_cache`)."""
    from ml.training.chips import build_cache, resampled_cache

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
    """The fixed split of `ml.training.data.split`, applied to cached chips by key."""
    samples = [
        Sample(path=Path(key), age=int(age), gender="male" if male else "female", dataset=dataset)
        for key, age, male, dataset in zip(chips.keys, chips.ages, chips.males, chips.datasets, strict=True)
    ]
    _, val = split(samples)
    val_keys = {s.key for s in val}
    is_val = np.array([key in val_keys for key in chips.keys])
    return chips.take(np.flatnonzero(~is_val)), chips.take(np.flatnonzero(is_val))


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
    through WebP at that quality (`ml.training.chips.webp_roundtrip`); else `train_set` itself."""
    if not config.train_webp:
        return train_set
    from ml.training.chips import webp_roundtrip

    started = time.time()
    chips = webp_roundtrip(train_set.chips, config.train_webp)
    faces = None if train_set.faces is None else webp_roundtrip(train_set.faces, config.train_webp)
    seconds = time.time() - started
    print(f"training chips through WebP at quality {config.train_webp} in {seconds:.0f} s", flush=True)
    return replace(train_set, chips=chips, faces=faces)


def load_sets(config: TrainConfig, faces: bool) -> tuple[ChipSet, ChipSet, ChipSet]:
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


def predict_chips(model, chips, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Inference-mode outputs for chips (array, or dict of arrays), averaged over the predictor's views."""
    from ml.model import merge_views, test_time_views

    ages, males = [], []
    for start in range(0, input_count(chips), batch_size):
        views = test_time_views(input_rows(chips, slice(start, start + batch_size)))
        views = {k: np.asarray(v) for k, v in views.items()} if isinstance(views, dict) else np.asarray(views)
        age, male = merge_views(model.predict_on_batch(views))
        ages.append(np.asarray(age))
        males.append(np.asarray(male))
    return {"age": np.concatenate(ages), "gender": np.concatenate(males)}


def input_rows(inputs, index):
    if isinstance(inputs, dict):
        return {name: np.asarray(value[index], dtype=np.float32) for name, value in inputs.items()}
    return np.asarray(inputs[index], dtype=np.float32)


def input_count(inputs) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
