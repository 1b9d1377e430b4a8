"""MTCNN's second and third stages (RNet, ONet) on given candidate boxes, read from the photo as it is.

The `mtcnn` package first turns the whole photo into a normalised float tensor, then cuts 24- and 48-px
patches from it: with a handful of candidates from BlazeFace (`ml.proposals`), that normalisation was
the larger part of the time. Here the patches are cut from the uint8 photo and normalised alone, and
the package's networks run on LiteRT (`ml/models/mtcnn`, made by `python -m ml.training.export mtcnn`
from the package's weights), with the package's own box arithmetic, so that the faces, boxes and
landmarks are those of the package's RNet and ONet on the same candidates
(`tests/ml/test_proposals.py`). Candidates reaching past the photo's edge are filled with the grey
that is zero after normalisation, as the package's are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_DIR = Path(__file__).resolve().parent / "models" / "mtcnn"

#: The package's normalisation, (x - 127.5) / 128, and so the raw value that becomes 0.
_MEAN, _SCALE = 127.5, 128.0


def _patches(tf, photo, boxes: np.ndarray, side: int):
    height, width = photo.shape[1:3]
    normalised = boxes[:, [2, 1, 4, 3]] / np.array([height, width, height, width], dtype=np.float64)
    cut = tf.image.crop_and_resize(
        photo, normalised, np.zeros(len(boxes), np.int32), (side, side), extrapolation_value=_MEAN
    )
    return ((cut - _MEAN) / _SCALE).numpy()


class Nets:
    """RNet and ONet on LiteRT: patches (N, S, S, 3) float32 → the Keras networks' outputs, in order."""

    def __init__(self, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._runners = {}
        for name in ("rnet", "onet"):
            interpreter = Interpreter(model_path=str(MODEL_DIR / f"{name}.tflite"), num_threads=threads)
            self._runners[name] = interpreter.get_signature_runner("serving_default")

    def __call__(self, name: str, patches: np.ndarray) -> list[np.ndarray]:
        outputs = self._runners[name](x=np.ascontiguousarray(patches, np.float32))
        return [outputs[f"output_{i}"] for i in range(len(outputs))]


def refine(
    tf,
    nets: Nets,
    rgb: np.ndarray,
    candidates: np.ndarray,
    threshold_rnet: float = 0.7,
    nms_rnet: float = 0.7,
    threshold_onet: float = 0.8,
    nms_onet: float = 0.7,
    between=None,
    **between_options,
) -> list[dict]:
    """Faces in `rgb` (uint8, H×W×3) from `candidates` (image index 0, x1, y1, x2, y2, score; already
    square) through `nets`, in the package's JSON form.
    `between`, if given, filters the candidates before RNet (as a stage of the package would)."""
    from mtcnn.utils.bboxes import (
        adjust_bboxes,
        limit_bboxes,
        pick_matches,
        replace_confidence,
        resize_to_square,
        smart_nms_from_bboxes,
        to_json,
    )
    from mtcnn.utils.landmarks import adjust_landmarks

    boxes = candidates if between is None else between(candidates, **between_options)
    if len(boxes) == 0:
        return []
    photo = tf.convert_to_tensor(rgb[None])
    offsets, scores = nets("rnet", _patches(tf, photo, boxes, 24))
    boxes = adjust_bboxes(replace_confidence(boxes, scores), offsets)
    boxes = pick_matches(boxes, score_threshold=threshold_rnet)
    if len(boxes) == 0:
        return []
    boxes = resize_to_square(
        smart_nms_from_bboxes(boxes, threshold=nms_rnet, method="union", initial_sort=True)
    )
    offsets, landmarks, scores = nets("onet", _patches(tf, photo, boxes, 48))
    landmarks = adjust_landmarks(tf.constant(landmarks), boxes)  # it calls `.numpy()` on them
    boxes = adjust_bboxes(replace_confidence(boxes, scores), offsets)
    boxes = np.concatenate([boxes, landmarks], axis=-1)
    boxes = pick_matches(boxes, scores_column=5, score_threshold=threshold_onet)
    if len(boxes) == 0:
        return []
    boxes = smart_nms_from_bboxes(boxes, threshold=nms_onet, method="min", initial_sort=True)
    boxes = limit_bboxes(boxes, images_shapes=np.array([rgb.shape]), limit_landmarks=False)
    return to_json(boxes, images_count=1, output_as_width_height=True, input_as_width_height=False)[0]
