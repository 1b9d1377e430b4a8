"""The network behind `ml.Predictor`: the Keras model, or the same model exported to LiteRT.

Both take a dict of (N, S, S, 3) float32 chips (one per model input) and return (age distributions
(N, 101), P(male) (N,)) averaged over the four test-time views (`ml.model.test_time_views`). The
`.keras` file is the source of truth: `python -m ml.training.export model MODEL_DIR` writes
`model.tflite` from it and records in the manifest (`litert`) the sha256 of the `.keras` it came from;
a LiteRT file made from another `.keras` is not used. Served on LiteRT, a worker needs no TensorFlow
for the model (see ml/MODEL_CARD.md, "Speed").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RUNTIMES = ("litert", "keras")


def default_runtime(manifest: dict, model_dir: Path) -> str:
    """ "litert" where the folder holds a LiteRT export of its own `.keras`, else "keras"."""
    litert = manifest.get("litert") or {}
    made_from_this = litert.get("from_sha256") == manifest.get("sha256")
    return "litert" if made_from_this and (model_dir / litert.get("file", "")).is_file() else "keras"


class LiteRTModel:
    """`model.tflite` (signature `serving_default`, outputs `age` and `male`) on LiteRT's XNNPACK."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads or litert_threads())
        self._runner = self._interpreter.get_signature_runner("serving_default")

    def __call__(self, chips: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = self._runner(**{name: np.ascontiguousarray(v, np.float32) for name, v in chips.items()})
        return out["age"], out["male"]


class KerasModel:
    """The Keras model, every chip with its test-time views in one compiled graph for any batch size."""

    def __init__(self, model, inputs: dict[str, int]) -> None:
        tf = tensorflow()

        from ml.model import merge_views, test_time_views

        self.keras = model
        signature = [{name: tf.TensorSpec([None, s, s, 3], tf.float32) for name, s in inputs.items()}]

        @tf.function(input_signature=signature, reduce_retracing=True)
        def infer(chips):
            views = test_time_views(chips)
            return merge_views(model(views if len(views) > 1 else views["image"], training=False))

        self._infer = infer

    def __call__(self, chips: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        age, male = self._infer({name: np.asarray(v, np.float32) for name, v in chips.items()})
        return age.numpy(), male.numpy()


def load_keras(path: Path):
    """The `.keras` model (importing `ml.model` first: it registers our custom layers)."""
    tensorflow()
    import keras

    import ml.model  # noqa: F401

    return keras.models.load_model(path, compile=False)


def tensorflow():
    """TensorFlow, imported, with `AGEGENDER_TF_THREADS` intra-op threads (inter-op: 1) where it is set to
    a whole number and TensorFlow has not started yet. Every serving module that needs TensorFlow gets it
    here, so that a worker's setting holds whichever loads it first."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    value = os.environ.get("AGEGENDER_TF_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(value))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already started in this process: its threads are fixed
            pass
    return tf


def litert_threads() -> int:
    """LiteRT's threads: `AGEGENDER_TF_THREADS` as for TensorFlow (the worker sets it), else every core."""
    import os

    value = os.environ.get("AGEGENDER_TF_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)
