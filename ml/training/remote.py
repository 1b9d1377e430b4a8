"""`python -m ml train` on a lent accelerator that has neither TensorFlow nor the datasets.

A lent GPU machine here holds JAX and PyTorch but no TensorFlow, cannot reach the internet, and takes at
most 64 MiB of files along. So the run is cut in three, each step the same code as
`python -m ml train`:

    # here (TensorFlow, the datasets, the chip cache): the training split's chips as WebP, the ported
    # Cydral networks, into a folder of about 50 MB
    python -m ml.training.remote pack var/remote
    # there (Keras on JAX, `pip install keras` from carried wheels): every fitting stage of `ml train`
    # (trunk, heads, fine-tuning, polish); the fused model's weights land in OUT
    KERAS_BACKEND=jax python -m ml.training.remote fit var/remote OUT [train options]
    # here: the finishing steps of `ml train` (batch norm from clean faces, gender expert, range,
    # validation metrics, the artifact) on the real chips
    python -m ml.training.remote finish OUT --out runs/NAME [the same train options]

On a lent machine of this workplace (64 MiB travel with the working tree, so the 24 MB model file must
stay behind: `git rm --cached ml/models/default/model.keras` and list it in `.git/info/exclude` for the
call, then `git reset ml/models/default/model.keras`), with `var/remote` carried and the wheels of
keras, namex and optree for its Python 3.12 in `var/remote/wheels` (`pip download --no-deps
--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
-d var/remote/wheels keras==3.15.1 namex optree`):

    scripts/remote_fit var/remote $OUT 540 'a=--calibration-share 0.1' 'b=--calibration-share 0.1 --epochs 6'

(it installs the wheels, prints `bench/train_step.py`'s figures, runs `fit` once per NAME=OPTIONS in
parallel on the one GPU, each with `--max-minutes` of 0.85 of the given seconds, and kills each after
them); then here, for each run, with the same options:

    python -m ml.training.remote finish $FILES/a --out runs/a --calibration-share 0.1

How long each step takes on an H100 and an H200 is in ml/MODEL_CARD.md ("Training on a GPU machine").

Only the training split travels (the validation faces stay here) and `ml.training.chipsets.hold_out`
draws the same calibration faces from it there and here. The chips travel as WebP (quality `QUALITY`: a
mean error of about 3 of 255 levels); the finishing steps re-estimate batch norm on the exact chips.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

QUALITY = 80
#: Weight files are cut into parts of at most this many bytes (a lent machine returns files ≤ 16 MiB).
PART_BYTES = 12 << 20
CYDRAL = (("age", "cydral_age"), ("gender", "cydral_gender"))


def encode_chips(chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from ml.training.chips import webp_bytes

    parts = [np.frombuffer(webp_bytes(chip, QUALITY), np.uint8) for chip in chips]
    return np.concatenate(parts), np.cumsum([0] + [len(p) for p in parts])


def decode_chips(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from ml.training.chips import webp_decode

    items = [blob[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
    # spawned, not forked: a fork of a process with threads running (TensorFlow's, a test's worker) can
    # hang on a lock one of them held
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(1, min(16, os.cpu_count() or 1)), mp_context=context) as pool:
        return np.stack(list(pool.map(webp_decode, items, chunksize=512)))


def pack(folder: Path, config) -> None:
    """The training split's chips and faces as WebP, labels, and the two ported Cydral networks."""
    import keras

    from ml.training.chipsets import load_chips, split_chips
    from ml.training.stages import ported_network

    folder.mkdir(parents=True, exist_ok=True)
    train_set, _ = split_chips(load_chips(config.data, config.input_size, config.cache_dir, faces=True))
    chip_blob, chip_offsets = encode_chips(train_set.chips)
    face_blob, face_offsets = encode_chips(train_set.faces)
    np.savez(
        folder / "train.npz",
        chip_blob=chip_blob,
        chip_offsets=chip_offsets,
        face_blob=face_blob,
        face_offsets=face_offsets,
        ages=train_set.ages,
        males=train_set.males,
        datasets=train_set.datasets,
        keys=train_set.keys,
        detected=train_set.detected,
    )
    for task, name in CYDRAL:
        network = ported_network(task, name)
        weights = network.get_weights()
        # float16 halves the size; every value of these networks is far inside its range
        assert max(float(np.abs(w).max()) for w in weights) < 6e4
        (folder / f"{name}.json").write_text(json.dumps(keras.saving.serialize_keras_object(network)))
        np.savez(folder / f"{name}.npz", *[w.astype(np.float16) for w in weights])
    meta = {"faces": len(train_set.ages), "webp_quality": QUALITY, "data": list(config.data)}
    (folder / "pack.json").write_text(json.dumps(meta, indent=2))
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"packed {len(train_set.ages)} training faces into {folder} ({size / 1e6:.1f} MB)")


def _keys_digest(keys) -> str:
    import hashlib

    return hashlib.sha256("\n".join(map(str, keys)).encode()).hexdigest()


def _unpacked_network(folder: Path, name: str):
    import keras

    import ml.model  # noqa: F401  (registers ChannelPad)

    network = keras.saving.deserialize_keras_object(json.loads((folder / f"{name}.json").read_text()))
    with np.load(folder / f"{name}.npz") as data:
        network.set_weights([data[f"arr_{i}"].astype(np.float32) for i in range(len(data.files))])
    return network


def save_weights(model, out: Path, stem: str = "fused", dtype=np.float32) -> list[Path]:
    """`model`'s weights as .npz parts of at most `PART_BYTES` each (float16 halves what travels)."""
    out.mkdir(parents=True, exist_ok=True)
    parts, current, size = [], [], 0
    for weight in (w.astype(dtype) for w in model.get_weights()):
        if current and size + weight.nbytes > PART_BYTES:
            parts.append(current)
            current, size = [], 0
        current.append(weight)
        size += weight.nbytes
    parts.append(current)
    paths, index = [], 0
    for number, part in enumerate(parts):
        path = out / f"{stem}-{number}.npz"
        np.savez(path, **{f"w{index + i:04d}": w for i, w in enumerate(part)})
        index += len(part)
        paths.append(path)
    return paths


def load_weights(model, folder: Path, stem: str = "fused") -> None:
    weights = {}
    for path in sorted(folder.glob(f"{stem}-*.npz")):
        with np.load(path) as data:
            weights.update({key: data[key].astype(np.float32) for key in data.files})
    model.set_weights([weights[key] for key in sorted(weights)])


def fit(folder: Path, out: Path, config) -> None:
    """Every fitting stage of `ml.training.stages.train` on the packed faces; the fused weights into `out`."""
    import keras

    from ml.training.chipsets import ChipSet, hold_out
    from ml.training.finishing import recalibrate_on_training_faces
    from ml.training.stages import Site, train

    if config.train_webp:
        raise SystemExit(f"the packed chips are WebP (quality {QUALITY}) already: no --train-webp here")
    started = time.time()
    with np.load(folder / "train.npz") as data:
        fields = {key: data[key] for key in data.files}
    everything = ChipSet(
        chips=decode_chips(fields["chip_blob"], fields["chip_offsets"]),
        faces=decode_chips(fields["face_blob"], fields["face_offsets"]),
        **{key: fields[key] for key in ("ages", "males", "datasets", "keys", "detected")},
    )
    print(f"{len(everything.ages)} faces decoded in {time.time() - started:.0f}s", flush=True)

    def load_sets(config, faces: bool):
        train_set, calibration_set = hold_out(everything, config.calibration_share, config.seed)
        # the validation split stayed behind: the calibration faces (or a slice of training faces)
        # give the per-epoch line something held out to show; `finish` measures on validation
        monitor = calibration_set
        if not len(calibration_set.ages):
            monitor = train_set.take(np.arange(min(1024, len(train_set.ages))))
        sets = (train_set, calibration_set, monitor)
        if not faces:
            sets = tuple(ChipSet(**{**s.__dict__, "faces": None}) for s in sets)
        print(
            f"train {len(train_set.ages)} faces, calibration {len(calibration_set.ages)}; "
            f"backend {keras.backend.backend()}",
            flush=True,
        )
        return sets

    def finish_here(model, train_set, calibration_set, val_set, config, *, train_seconds):
        if config.architecture == "resnet":  # the trunk, as `finish` would save it, for stage 2
            recalibrate_on_training_faces(model, train_set, config)
            Path(config.out).mkdir(parents=True, exist_ok=True)
            model.save(Path(config.out) / "model.keras")
        else:
            paths = save_weights(model, out)
            meta = {
                "train_seconds": round(train_seconds, 1),
                "faces": {"train": len(train_set.ages), "calibration": len(calibration_set.ages)},
                "calibration_sha256": _keys_digest(calibration_set.keys),
                "config": config.__dict__,
            }
            (out / "fit.json").write_text(json.dumps(meta, indent=2, default=str))
            print(f"weights: {', '.join(str(p) for p in paths)}", flush=True)
        return {}

    network = lambda task, name: _unpacked_network(folder, name)  # noqa: E731
    train(config, Site(load_sets=load_sets, network=network, finish=finish_here))
    print(f"fit done in {time.time() - started:.0f}s", flush=True)


def finish(weights: Path, config) -> dict:
    """`ml.training.finishing.finish` on the fused model whose weights `fit` left in `weights`."""
    from dataclasses import replace

    from ml.training.stages import fused_model, local_site

    here = local_site()
    meta = json.loads((weights / "fit.json").read_text())
    train_set, calibration_set, val_set = here.load_sets(config, True)
    if meta["calibration_sha256"] != _keys_digest(calibration_set.keys):
        raise SystemExit("the calibration faces here differ from those held out in the fit: same options?")
    model = fused_model(replace(config, trunk_from=None), here)  # every weight comes from the fit
    load_weights(model, weights)
    return here.finish(
        model, train_set, calibration_set, val_set, config, train_seconds=meta["train_seconds"]
    )


def carry_weights(model_dir: Path, out: Path) -> None:
    """A finished model's fused weights (its gender expert left out) as float16 parts in `out`, for
    `--init-from out` on a GPU machine, where the 24 MB model file would not fit beside the pack."""
    import keras

    import ml.model  # noqa: F401  (registers the custom layers)

    saved = keras.models.load_model(model_dir / "model.keras", compile=False)
    if "agegender_fused" in [layer.name for layer in saved.layers]:
        saved = saved.get_layer("agegender_fused")
    paths = save_weights(saved, out, dtype=np.float16)
    print(f"{sum(p.stat().st_size for p in paths) / 1e6:.1f} MB of weights in {out}")


def main(argv: list[str] | None = None) -> int:
    from ml.training.config import add_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="python -m ml.training.remote", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    weights = commands.add_parser("weights", help="a model's weights as float16 parts, for --init-from")
    weights.add_argument("model_dir", type=Path)
    weights.add_argument("out", type=Path)
    for name in ("pack", "fit", "finish"):
        sub = commands.add_parser(name)
        if name in ("pack", "fit"):
            sub.add_argument("folder", type=Path, help="the packed folder")
        if name in ("fit", "finish"):
            sub.add_argument("weights", type=Path, help="where fit writes (and finish reads) the weights")
        add_arguments(sub)
    args = parser.parse_args(argv)
    if args.command == "weights":
        carry_weights(args.model_dir, args.out)
        return 0
    config = config_from_args(args)
    if args.command == "pack":
        pack(args.folder, config)
    elif args.command == "fit":
        fit(args.folder, args.weights, config)
    else:
        finish(args.weights, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
