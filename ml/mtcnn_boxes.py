"""MTCNN's box arithmetic and patch cutting in NumPy, so that serving needs no TensorFlow.

The functions follow the `mtcnn` 1.0.0 package's (`mtcnn/utils/bboxes.py`, `landmarks.py`, MIT licence,
Iván de Paz Centeno) line for line in what they compute; that package imports TensorFlow on import, so
they are restated here rather than imported. Boxes are rows of image index, x1, y1, x2, y2, score and,
after ONet, ten landmark coordinates (five x, then five y). `tests/ml/test_mtcnn_boxes.py` checks them
against the package's on the same inputs.
"""

from __future__ import annotations

import numpy as np

#: The order of the package's keypoints in its JSON, and where each one's x lies among the ten values.
KEYPOINTS = {"left_eye": 0, "right_eye": 1, "nose": 2, "mouth_left": 3, "mouth_right": 4}


def nms(
    boxes: np.ndarray, threshold: float, method: str = "union", size_ratio: float | None = None
) -> np.ndarray:
    """The package's `smart_nms_from_bboxes` for one image: sorted by score, a box is dropped when it
    overlaps any earlier (better) box by more than `threshold` (IoU, or over the smaller area: "min").
    With `size_ratio`, only by a box whose area is within that ratio of its own (not the package's)."""
    if len(boxes) == 0:
        return boxes
    boxes = boxes[np.argsort(boxes[:, 5])[::-1]]
    x1, y1, x2, y2 = (boxes[:, i] for i in range(1, 5))
    area = (x2 - x1) * (y2 - y1)
    inter_w = np.maximum(0, np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]))
    inter_h = np.maximum(0, np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]))
    inter = inter_w * inter_h
    if method == "union":
        overlap = inter / (area[:, None] + area[None] - inter)
    else:
        overlap = inter / np.minimum(area[:, None], area[None])
    earlier = np.triu(np.ones((len(boxes), len(boxes)), bool), k=1)
    if size_ratio is not None:
        ratio = np.maximum(area[:, None], area[None]) / np.maximum(
            np.minimum(area[:, None], area[None]), 1e-9
        )
        earlier &= ratio <= size_ratio
    return boxes[~((overlap > threshold) & earlier).any(axis=0)]


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown about its centre to a square of its longer side."""
    boxes = boxes.copy()
    w, h = boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2]
    side = np.maximum(w, h)
    boxes[:, 1] += w * 0.5 - side * 0.5
    boxes[:, 2] += h * 0.5 - side * 0.5
    boxes[:, 3] = boxes[:, 1] + side
    boxes[:, 4] = boxes[:, 2] + side
    return boxes


def adjust(boxes: np.ndarray, offsets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A network's scores (P(face), the last column) and box offsets (in box sizes) applied."""
    boxes = boxes.copy()
    boxes[:, 5] = scores[:, -1]
    w = boxes[:, 3] - boxes[:, 1] + 1
    h = boxes[:, 4] - boxes[:, 2] + 1
    boxes[:, 1:5] += offsets * np.stack([w, h, w, h], axis=-1)
    return boxes


def place_landmarks(landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """ONet's landmarks (fractions of the box it read) in pixels."""
    landmarks = np.array(landmarks, np.float64)
    w = boxes[:, 3:4] - boxes[:, 1:2] + 1
    h = boxes[:, 4:5] - boxes[:, 2:3] + 1
    landmarks[:, 0:5] = w * landmarks[:, 0:5] + boxes[:, 1:2] - 1
    landmarks[:, 5:10] = h * landmarks[:, 5:10] + boxes[:, 2:3] - 1
    return landmarks


def as_json(boxes: np.ndarray, height: int, width: int) -> list[dict]:
    """The package's output: boxes clipped to the last whole pixel, as rounded x, y, width, height; its
    confidence; keypoints rounded to whole pixels."""
    boxes = boxes.copy()
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, width - 1)
    boxes[:, [2, 4]] = boxes[:, [2, 4]].clip(0, height - 1)
    faces = []
    for row in boxes:
        x1, y1, x2, y2 = row[1:5]
        points = row[6:16].round().astype(int)
        faces.append(
            {
                "box": np.asarray([x1, y1, x2 - x1, y2 - y1]).round().astype(int).tolist(),
                "confidence": row[5],
                "keypoints": {name: [points[i], points[i + 5]] for name, i in KEYPOINTS.items()},
            }
        )
    return faces


def patches(rgb: np.ndarray, boxes: np.ndarray, side: int, fill: float) -> np.ndarray:
    """(N, side, side, 3) float32 bilinear crops of `rgb` (H×W×3) at each box, as TensorFlow's
    `crop_and_resize` cuts them from boxes given as fractions of the photo's height and width (the
    package's `extract_patches`); points past the photo take `fill`."""
    height, width = rgb.shape[:2]
    steps = np.arange(side) / (side - 1)

    def sample_points(start, stop, size):  # (N, side) source coordinates, as crop_and_resize places them
        start, stop = start / size * (size - 1), stop / size * (size - 1)
        return start[:, None] + (stop - start)[:, None] * steps[None]

    ys = sample_points(boxes[:, 2], boxes[:, 4], height)
    xs = sample_points(boxes[:, 1], boxes[:, 3], width)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    fy = (ys - y0).astype(np.float32)[:, :, None, None]
    fx = (xs - x0).astype(np.float32)[:, None, :, None]
    # gathered from the uint8 photo by flat pixel index, then made float: not the whole photo made float
    flat = rgb.reshape(-1, rgb.shape[2])
    rows = [y.clip(0, height - 1) * width for y in (y0, y0 + 1)]
    cols = [x.clip(0, width - 1) for x in (x0, x0 + 1)]

    def at(row, col):
        return flat[row[:, :, None] + col[:, None, :]].astype(np.float32)

    top = at(rows[0], cols[0]) * (1 - fx) + at(rows[0], cols[1]) * fx
    bottom = at(rows[1], cols[0]) * (1 - fx) + at(rows[1], cols[1]) * fx
    out = top * (1 - fy) + bottom * fy
    outside = ((ys < 0) | (ys > height - 1))[:, :, None] | ((xs < 0) | (xs > width - 1))[:, None, :]
    out[outside] = fill
    return out.astype(np.float32)
