"""Keras networks as LiteRT models, for the parts of serving that run on LiteRT.

    python -m ml.training.export model [MODEL_DIR] [--float]   # model.keras → model.tflite (+ manifest)
    python -m ml.training.export mtcnn [OUT]         # MTCNN's networks → ml/models/mtcnn/*.tflite

The served model runs on LiteRT from `model.tflite` (`ml.runtime`): the `.keras` model with its four
test-time views and their average, one signature taking the chips of every input. The manifest's
`litert` records the file, its sha256 and the sha256 of the `.keras` it was made from.

MTCNN's second and third stages judge each candidate face on a 24- and 48-px patch (`ml.refine`). Called
through TensorFlow, each call on a handful of patches paid about 3 ms of overhead; on LiteRT (XNNPACK)
RNet takes about a third of that and ONet two thirds. The weights are the `mtcnn` package's own (MIT);
the files are made from them here, once, and shipped; `tests/ml/test_proposals.py` checks that they
answer as the package's networks do.

A model goes through a TensorFlow SavedModel written by `keras.export.ExportArchive` (converting a
traced function directly gave NaN outputs and was slower; see ml/MODEL_CARD.md).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

MTCNN_DIR = Path(__file__).resolve().parents[1] / "models" / "mtcnn"
#: Patch side of each exported MTCNN stage, as the package's stages cut them.
MTCNN_STAGES = {"pnet": None, "rnet": 24, "onet": 48}


def export_model(model_dir: Path, quantize: bool = True) -> Path:
    """`model.tflite` from the folder's `.keras`. `quantize` (the default): weights stored as int8 and
    multiplied as such by XNNPACK ("dynamic range" quantisation; activations stay float), a quarter of
    the size and about four times as fast on a CPU; else float32, equal to the Keras model within 1e-3.
    Either is checked against the Keras model on random chips before it is kept; what quantisation does
    to the figures is measured by `python -m ml evaluate` (ml/MODEL_CARD.md, "Speed")."""
    import keras
    import numpy as np
    import tensorflow as tf

    from ml.artifact import read_manifest, sha256, write_manifest
    from ml.model import merge_views, test_time_views
    from ml.runtime import KerasModel, LiteRTModel

    manifest = read_manifest(model_dir)
    model = keras.models.load_model(model_dir / manifest["file"], compile=False)
    sizes = {name: int(spec["size"]) for name, spec in manifest["inputs"].items()}
    specs = {name: tf.TensorSpec([None, s, s, 3], tf.float32, name=name) for name, s in sizes.items()}

    def serve(chips):
        age, male = merge_views(model(test_time_views(chips), training=False))
        return {"age": age, "male": male}

    path = model_dir / "model.tflite"
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", serve, input_signature=[specs])
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        path.write_bytes(converter.convert())
    chips = {
        n: np.random.default_rng(0).integers(0, 256, (16, s, s, 3)).astype(np.float32)
        for n, s in sizes.items()
    }
    (age, male), (their_age, their_male) = LiteRTModel(path)(chips), KerasModel(model, sizes)(chips)
    years = np.arange(age.shape[1])
    worst_age = float(np.abs(age @ years - their_age @ years).max())
    worst_male = float(np.abs(male - their_male).max())
    bounds = (1.5, 0.1) if quantize else (1e-3, 1e-3)  # years of mean age, P(male)
    if worst_age > bounds[0] or worst_male > bounds[1]:
        raise RuntimeError(
            f"{path} answers unlike {manifest['file']} ({worst_age:.2g} y, {worst_male:.2g}): not kept"
        )
    manifest["litert"] = {
        "file": path.name,
        "sha256": sha256(path),
        "from_sha256": manifest["sha256"],
        "quantization": "dynamic-range int8 weights" if quantize else "none (float32)",
    }
    write_manifest(model_dir, manifest)
    print(
        f"{path}: {path.stat().st_size:,} bytes; against the Keras model on random chips: mean age within "
        f"{worst_age:.2f} years, P(male) within {worst_male:.3f}"
    )
    return path


def to_litert(model, input_shape: tuple[int, ...], path: Path) -> int:
    """Write `model` (a Keras model taking one float32 tensor of `input_shape`, batch first and free) as a
    LiteRT flatbuffer at `path`; its signature `serving_default` returns `output_0`, `output_1`, … in
    the order the model returns them. Returns the file's size."""
    import keras
    import tensorflow as tf

    model(tf.zeros([1] + [d or 12 for d in input_shape[1:]]))  # a subclassed model has no graph until called
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve", lambda x: tuple(model(x)), input_signature=[tf.TensorSpec(input_shape, tf.float32)]
        )
        archive.write_out(folder, verbose=False)
        data = tf.lite.TFLiteConverter.from_saved_model(folder).convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def export_mtcnn(out: Path = MTCNN_DIR) -> list[Path]:
    from mtcnn import MTCNN

    stages = MTCNN().stages
    written = []
    for name, side in MTCNN_STAGES.items():
        stage = next(s for s in stages if name in type(s).__name__.lower())
        path = out / f"{name}.tflite"
        size = to_litert(stage._model, (None, side, side, 3), path)
        print(f"{path}: {size:,} bytes")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("model", "mtcnn"):
        print("\n".join(__doc__.strip().splitlines()[2:4]), file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "model":
        from ml.artifact import DEFAULT_MODEL_DIR

        folders = [a for a in sys.argv[2:] if not a.startswith("--")]
        export_model(Path(folders[0]) if folders else DEFAULT_MODEL_DIR, quantize="--float" not in sys.argv)
    else:
        export_mtcnn(Path(sys.argv[2]) if len(sys.argv) > 2 else MTCNN_DIR)
