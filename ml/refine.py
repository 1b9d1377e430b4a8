"""MTCNN's second and third stages (RNet, ONet) on given candidate boxes, read from the photo as it is.

The `mtcnn` package first turns the whole photo into a normalised float tensor, then cuts 24- and 48-px
patches from it: with a handful of candidates from BlazeFace (`ml.proposals`), that normalisation was
the larger part of the time. Here the patches are cut from the uint8 photo and normalised alone, and
the package's networks run on LiteRT (`ml/models/mtcnn`, made by `python -m ml.training.export mtcnn`
from the package's weights), with the package's box arithmetic (`ml.mtcnn_boxes`; no TensorFlow), so
that the faces, boxes and
landmarks are those of the package's RNet and ONet on the same candidates
(`tests/ml/test_proposals.py`). Candidates reaching past the photo's edge are filled with the grey
that is zero after normalisation, as the package's are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.mtcnn_boxes import adjust, as_json, nms, patches, place_landmarks, square

MODEL_DIR = Path(__file__).resolve().parent / "models" / "mtcnn"

#: The package's normalisation, (x - 127.5) / 128, and so the raw value that becomes 0.
_MEAN, _SCALE = 127.5, 128.0


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
    nets: Nets,
    rgb: np.ndarray,
    candidates: np.ndarray,
    threshold_rnet: float = 0.7,
    nms_rnet: float = 0.9,
    threshold_onet: float = 0.8,
    nms_onet: float = 0.7,
    between=None,
    **between_options,
) -> list[dict]:
    """Faces in `rgb` (uint8, H×W×3) from `candidates` (image index 0, x1, y1, x2, y2, score; already
    square) through `nets`, in the package's JSON form. `between`, if given, filters the candidates
    before RNet (as a stage of the package would).

    `nms_rnet` is 0.9 where the package's is 0.7: BlazeFace's few candidates for a face (one per
    `ml.proposals.WIDEN` factor) overlap by about 0.7-0.8, and the one RNet liked best was often one that
    ONet then put under `ml.detection.MIN_CONFIDENCE`, losing the face; ONet now reads each and the final
    suppression keeps its best (`python bench/detector_recall.py --cut 0.5`: 2 faces more of 120, no
    false one more; `--size 4032x3024 --tiles 60-300`: 1 more of 120, 2 false more in 20 photos)."""
    boxes = candidates if between is None else between(candidates, **between_options)
    if len(boxes) == 0:
        return []
    offsets, scores = nets("rnet", _normalised(patches(rgb, boxes, 24, _MEAN)))
    boxes = adjust(boxes, offsets, scores)
    boxes = boxes[boxes[:, 5] > threshold_rnet]
    if len(boxes) == 0:
        return []
    boxes = square(nms(boxes, nms_rnet))
    offsets, landmarks, scores = nets("onet", _normalised(patches(rgb, boxes, 48, _MEAN)))
    landmarks = place_landmarks(landmarks, boxes)
    boxes = np.concatenate([adjust(boxes, offsets, scores), landmarks], axis=-1)
    boxes = boxes[boxes[:, 5] > threshold_onet]
    if len(boxes) == 0:
        return []
    # A face box holding a far smaller face is not a face that holds a face: a blurred backdrop or a
    # pattern that BlazeFace's whole-photo look took for one. The smaller face is kept (the package's NMS
    # over the smaller box's area would drop it) and the box that holds it dropped.
    boxes = nms(boxes, nms_onet, method="min", size_ratio=4.0)
    return as_json(boxes[~holds_another(boxes)], *rgb.shape[:2])


def holds_another(boxes: np.ndarray) -> np.ndarray:
    """For each box (rows of index, x1, y1, x2, y2, …), whether another box lies wholly inside it."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(1, 5))
    inside = (x1[:, None] <= x1[None]) & (y1[:, None] <= y1[None]) & (x2[:, None] >= x2[None])
    inside &= y2[:, None] >= y2[None]
    np.fill_diagonal(inside, False)
    return inside.any(axis=1)


def _normalised(pixels: np.ndarray) -> np.ndarray:
    return (pixels - _MEAN) / _SCALE
