"""MTCNN's first stage, PNet slid over an image pyramid, on LiteRT: candidates for faces too small for
BlazeFace's looks (`ml.proposals`), and for every face in a photo where BlazeFace sees none.

PNet (`ml/models/mtcnn/pnet.tflite`, the `mtcnn` package's weights, `python -m ml.training.export mtcnn`)
reads the photo at each scale of the package's pyramid (`build_scale_pyramid`), and its hits become
boxes as the package's `StagePNet` makes them (`generate_bounding_box`, non-maximum suppression per
scale and across scales, squared). The photo is scaled by Pillow's box filter where the package uses
TensorFlow's area resize: the same averaging, rounded differently. Only the scales for faces up to
`max_face_px` are read: the large scales, for small faces, are the costly ones, and BlazeFace finds
the larger faces.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ml.mtcnn_boxes import nms, square
from ml.refine import MODEL_DIR

#: PNet's window and stride, in pixels of the scaled photo.
WINDOW, STRIDE = 12, 2


def scales(width: int, height: int, min_face_px: float, scale_factor: float) -> np.ndarray:
    """The package's `build_scale_pyramid`: from the scale at which a `min_face_px` face fills PNet's
    window, down by `scale_factor` while the photo's shorter side stays above the window."""
    count = round(-((np.log(min(width, height) / WINDOW) / np.log(scale_factor)) + 1))
    return WINDOW / min_face_px * scale_factor ** np.arange(count)


def boxes_from_hits(regression: np.ndarray, faceness: np.ndarray, threshold: float) -> np.ndarray:
    """The package's `generate_bounding_box` for one photo: PNet's (h, w, 4) offsets and (h, w, 2)
    scores → rows of 0, x1, y1, x2, y2, score in pixels of the scaled photo, best first."""
    score = faceness[:, :, 1]
    ys, xs = np.where(score > threshold)
    dx1, dy1, dx2, dy2 = regression[ys, xs].T
    left, top = xs * STRIDE + 1, ys * STRIDE + 1
    right, bottom = xs * STRIDE + WINDOW, ys * STRIDE + WINDOW
    size_w, size_h = right - left, bottom - top
    rows = np.stack(
        [
            np.zeros(len(ys)),
            left + dx1 * size_w,
            top + dy1 * size_h,
            right + dx2 * size_w,
            bottom + dy2 * size_h,
            score[ys, xs],
        ],
        axis=1,
    )
    return rows[np.argsort(rows[:, 5])[::-1]]


class Pyramid:
    def __init__(self, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(MODEL_DIR / "pnet.tflite"), num_threads=threads)
        self._runner = interpreter.get_signature_runner("serving_default")

    def candidates(
        self,
        rgb: np.ndarray,
        min_face_px: float,
        max_face_px: float | None = None,
        scale_factor: float = 0.709,
        threshold: float = 0.6,
    ) -> np.ndarray:
        """Square candidate boxes (rows of 0, x1, y1, x2, y2, score) for faces of `min_face_px` up to
        about `max_face_px` (every size when None), for `ml.refine`."""
        height, width = rgb.shape[:2]
        image = Image.fromarray(rgb)
        found = []
        for scale in scales(width, height, min_face_px, scale_factor):
            if max_face_px is not None and WINDOW / scale > max_face_px * scale_factor**-1:
                break
            size = (int(width * scale), int(height * scale))
            if min(size) < WINDOW:
                break
            pixels = (np.asarray(image.resize(size, Image.Resampling.BOX), np.float32) - 127.5) / 128
            out = self._runner(x=pixels[None])
            regression, faceness = out["output_0"][0], out["output_1"][0]
            rows = boxes_from_hits(regression, faceness, threshold)
            rows[:, 1:5] /= scale
            found.append(nms(rows, 0.5))
        if not found:
            return np.empty((0, 6))
        return square(nms(np.concatenate(found), 0.7))
