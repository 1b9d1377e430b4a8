"""Keras networks as LiteRT models, for the parts of serving that run on LiteRT.

    python -m ml.training.export mtcnn [OUT]     # MTCNN's RNet and ONet → ml/models/mtcnn/{rnet,onet}.tflite

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
MTCNN_STAGES = {"rnet": 24, "onet": 48}


def to_litert(model, input_shape: tuple[int, ...], path: Path) -> int:
    """Write `model` (a Keras model taking one float32 tensor of `input_shape`, batch first and free) as a
    LiteRT flatbuffer at `path`; its signature `serving_default` returns `output_0`, `output_1`, … in
    the order the model returns them. Returns the file's size."""
    import keras
    import tensorflow as tf

    model(tf.zeros((1, *input_shape[1:])))  # a subclassed model has no graph until it is called
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

    stages = {stage.name: stage for stage in MTCNN().stages}
    written = []
    for name, side in MTCNN_STAGES.items():
        stage = next(s for s in stages.values() if name in type(s).__name__.lower())
        path = out / f"{name}.tflite"
        size = to_litert(stage._model, (None, side, side, 3), path)
        print(f"{path}: {size:,} bytes")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "mtcnn":
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    export_mtcnn(Path(sys.argv[2]) if len(sys.argv) > 2 else MTCNN_DIR)
