"""Face proposals from BlazeFace (MediaPipe's full-range face detector) for MTCNN's two later stages.

MTCNN's first stage (PNet) slides a 12-px window over a pyramid of the whole photo: in a 640×480 photo
that is two thirds of the detection time. BlazeFace reads the photo at 192×192 in about 3 ms; its boxes
go, as PNet's would, to MTCNN's RNet and ONet, which decide, place the box and the five landmarks as
before (`ml.detection`). Faces too small for one 192-px look at the whole photo are proposed from
overlapping tiles (`TILE_PX` at detection scale, each read at 192 px).

The network (MediaPipe's, Apache 2.0; source and checksum in `ml/models/blazeface/README.md`) ships in
the repository and runs on LiteRT (`ai-edge-litert`, Google's maintained TFLite runtime).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MODEL_DIR = Path(__file__).resolve().parent / "models" / "blazeface"
INPUT_PX = 192
MODEL_FILE = "face_detection_full_range_sparse.tflite"
#: A proposal's score (sigmoid) at least this: low, since RNet and ONet decide; BlazeFace's own is 0.5.
MIN_SCORE = 0.1
#: Proposals kept per look, best first (RNet reads each as a 24-px patch).
MAX_PROPOSALS = 256
#: Side of a tile, at detection scale, for faces too small for the whole-photo look: read at `INPUT_PX`,
#: a tile enlarges its faces by TILE_PX / INPUT_PX against a look at a photo of that side.
TILE_PX = 320
#: The smallest face (its box's side, in input pixels) that BlazeFace finds reliably in one look. Tiles
#: overlap by the largest face that the whole-photo look may miss, so that it is whole in one of them.
MIN_FACE_INPUT_PX = 16
#: Proposals overlapping more than this are one: RNet reads the best of them.
MERGE_IOU = 0.5
#: BlazeFace's box runs from the brows to below the mouth; MTCNN's from the forehead to the chin. Each
#: proposal is widened by these factors about its centre (RNet, then ONet, refine it).
WIDEN = (1.15, 1.45)


def model_path() -> Path:
    return MODEL_DIR / MODEL_FILE


def _anchors() -> np.ndarray:
    """Centres of the 48×48 grid of one anchor each (stride 4), as fractions of the input."""
    cells = (np.arange(INPUT_PX // 4, dtype=np.float32) + 0.5) / (INPUT_PX // 4)
    ys, xs = np.meshgrid(cells, cells, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


class BlazeFace:
    """RGB uint8 array in, (N, 5) proposals out: x1, y1, x2, y2, score in the array's pixels."""

    def __init__(self, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(model_path()), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda o: o["shape"][-1], reverse=True)
        self._boxes, self._scores = (o["index"] for o in outputs)  # (1, 2304, 16) and (1, 2304, 1)
        self._anchors = _anchors()

    def look(self, rgb: np.ndarray, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Proposals in one look at `window` (x1, y1, x2, y2; the whole array when None), letterboxed."""
        x1, y1, x2, y2 = window or (0, 0, rgb.shape[1], rgb.shape[0])
        side = max(x2 - x1, y2 - y1)
        scale = INPUT_PX / side
        size = (max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale)))
        resized = Image.fromarray(rgb[y1:y2, x1:x2]).resize(size, Image.Resampling.BILINEAR)
        return self._read(np.asarray(resized), side, (x1, y1))

    def look_tiles(self, rgb: np.ndarray, tile_px: int, overlap: float | None = None) -> list[np.ndarray]:
        """Proposals in one look at each tile (`tiles`): the photo is scaled once, to the tiles' scale,
        and each tile cut from it (every tile but the last of a row or column is a whole square)."""
        height, width = rgb.shape[:2]
        scale = INPUT_PX / tile_px
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        found = []
        for x1, y1, _, _ in tiles(width, height, tile_px, overlap):
            left, top = round(x1 * scale), round(y1 * scale)
            cut = small[top : top + INPUT_PX, left : left + INPUT_PX]
            found.append(self._read(cut, tile_px, (left / scale, top / scale)))
        return found

    def _read(self, pixels: np.ndarray, side: float, origin: tuple[float, float]) -> np.ndarray:
        """BlazeFace on `pixels` (at most INPUT_PX square, letterboxed at the top left), which show `side`
        photo pixels across from `origin`: proposals in photo pixels."""
        canvas = np.zeros((INPUT_PX, INPUT_PX, 3), np.float32)
        canvas[: pixels.shape[0], : pixels.shape[1]] = pixels.astype(np.float32) / 127.5 - 1.0
        self._interpreter.set_tensor(self._input, canvas[None])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._boxes)[0]
        logits = self._interpreter.get_tensor(self._scores)[0, :, 0]
        best = np.argsort(-logits)[:MAX_PROPOSALS]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[best], -80, 80)))
        keep = best[scores >= MIN_SCORE]
        scores = scores[scores >= MIN_SCORE]
        centre = self._anchors[keep] + raw[keep, :2] / INPUT_PX
        half = raw[keep, 2:4] / INPUT_PX / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1) * side  # fractions → photo px
        boxes += (*origin, *origin)
        return np.concatenate([boxes, scores[:, None]], axis=1)

    def propose(self, rgb: np.ndarray, tiled: bool = True, tile_px: int | None = None) -> np.ndarray:
        """Proposals from the whole photo and, where it is larger than a tile, from every tile, merged
        where they overlap (`MERGE_IOU`)."""
        found = [self.look(rgb)]
        tile_px = tile_px or TILE_PX
        if tiled and max(rgb.shape[:2]) > tile_px:
            found.extend(self.look_tiles(rgb, tile_px))
        return merge(np.concatenate(found, axis=0))


def merge(proposals: np.ndarray, iou: float | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: of proposals overlapping by more than `MERGE_IOU`, the best."""
    iou = MERGE_IOU if iou is None else iou
    order = np.argsort(-proposals[:, 4])
    boxes = proposals[order]
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    kept: list[int] = []
    alive = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        kept.append(i)
        w = (np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0])).clip(0)
        h = (np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1])).clip(0)
        overlap = w * h / np.maximum(areas[i] + areas - w * h, 1e-6)
        alive &= overlap <= iou
    return boxes[kept]


def tiles(
    width: int, height: int, tile_px: int | None = None, overlap: float | None = None
) -> list[tuple[int, int, int, int]]:
    """Overlapping squares of `tile_px` (default `TILE_PX`) covering a photo (clipped to it where it is
    narrower), overlapping by `overlap` (default: the largest face a look at the whole photo may miss)."""
    tile_px = tile_px or TILE_PX
    overlap = MIN_FACE_INPUT_PX * max(width, height) / INPUT_PX if overlap is None else overlap

    def starts(length: int) -> list[int]:
        if length <= tile_px:
            return [0]
        count = int(np.ceil((length - overlap) / (tile_px - overlap)))
        return [round(i * (length - tile_px) / (count - 1)) for i in range(count)]

    return [
        (x, y, min(width, x + tile_px), min(height, y + tile_px))
        for y in starts(height)
        for x in starts(width)
    ]


def as_mtcnn_boxes(proposals: np.ndarray) -> np.ndarray:
    """Proposals as the boxes MTCNN's RNet stage takes: image index, x1, y1, x2, y2, score, each proposal
    widened by every factor of `WIDEN` about its centre."""
    rows = []
    for factor in WIDEN:
        centre = (proposals[:, :2] + proposals[:, 2:4]) / 2
        half = (proposals[:, 2:4] - proposals[:, :2]) * factor / 2
        rows.append(
            np.concatenate(
                [np.zeros((len(proposals), 1)), centre - half, centre + half, proposals[:, 4:5]], axis=1
            )
        )
    return np.concatenate(rows, axis=0).astype(np.float32) if rows else np.empty((0, 6), np.float32)
