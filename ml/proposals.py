"""Face proposals from BlazeFace (MediaPipe's full-range face detector) for MTCNN's two later stages.

MTCNN's first stage (PNet) slides a 12-px window over a pyramid of the whole photo: in a 640×480 photo
that is two thirds of the detection time. BlazeFace reads the photo at 192×192 in about 3 ms; its boxes
go, as PNet's would, to MTCNN's RNet and ONet, which decide, place the box and the five landmarks as
before (`ml.detection`). Faces too small for one 192-px look at the whole photo are proposed from one
look at the whole photo scaled as a `TILE_PX` tile would be read at 192 px: the network is fully
convolutional but for the sizes of its three upsampling steps, which `SizedModels` sets for each such
photo's size (a copy of the file with three numbers changed). One large look costs about what the
area it reads costs, where overlapping 192-px tiles read much of the photo twice (a 640×480 photo: six
tiles; an 800×600 one: nine). The look sees each face among more of the photo than a tile did, which
changes BlazeFace's scores for small faces a little either way; `MIN_SCORE` is half what the tiles had.

The network (MediaPipe's, Apache 2.0; source and checksum in `ml/models/blazeface/README.md`) ships in
the repository and runs on LiteRT (`ai-edge-litert`, Google's maintained TFLite runtime).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MODEL_DIR = Path(__file__).resolve().parent / "models" / "blazeface"
INPUT_PX = 192
MODEL_FILE = "face_detection_full_range_sparse.tflite"
#: A proposal's score (sigmoid) at least this: low, since RNet and ONet decide; BlazeFace's own is 0.5.
MIN_SCORE = 0.05
#: Proposals kept per look of `INPUT_PX` square (more in a larger look, by its area), best first (RNet
#: reads each as a 24-px patch).
MAX_PROPOSALS = 256
#: For faces too small for the whole-photo look, the photo is read once more scaled by INPUT_PX / TILE_PX:
#: as a tile of this side (pixels at detection scale) would be read at `INPUT_PX`.
TILE_PX = 320
#: The smallest face (its box's side, in input pixels) that BlazeFace finds reliably in one look.
MIN_FACE_INPUT_PX = 16
#: The network's coarsest stride: a look's sides are multiples of it (the photo is padded to them; padding
#: to 64 px, so that more photo shapes share a sized network, cost 10-15% more time for a 640×480 photo).
STRIDE_PX = 32
#: Sized copies of the network kept per process (one per look shape met lately): about 20 ms to make, and
#: about 33 MB of memory each for an 800 × 600 photo's look.
SIZED_KEPT = 3
#: Proposals overlapping more than this are one: RNet reads the best of them.
MERGE_IOU = 0.5
#: BlazeFace's box runs from the brows to below the mouth; MTCNN's from the forehead to the chin. Each
#: proposal is widened by these factors about its centre (RNet, then ONet, refine it).
WIDEN = (1.15, 1.3, 1.45)


def model_path() -> Path:
    return MODEL_DIR / MODEL_FILE


@dataclass(frozen=True)
class Look:
    """BlazeFace ready for looks of one size: its interpreter, input and outputs (boxes and landmarks
    (1, cells, 16), logits (1, cells, 1); a cell per 4×4 pixels), and the cells' centres in its pixels."""

    interpreter: object
    input: int
    boxes: int
    logits: int
    anchors: np.ndarray

    @classmethod
    def of(cls, interpreter, height: int, width: int) -> Look:
        outputs = sorted(interpreter.get_output_details(), key=lambda o: o["shape"][-1], reverse=True)
        ys, xs = np.meshgrid(np.arange(height // 4) * 4 + 2.0, np.arange(width // 4) * 4 + 2.0, indexing="ij")
        anchors = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
        boxes, logits = (o["index"] for o in outputs)
        return cls(interpreter, interpreter.get_input_details()[0]["index"], boxes, logits, anchors)


class SizedModels:
    """The network for looks of any size (multiples of `STRIDE_PX`): the file's three RESIZE_BILINEAR
    steps take their output size from constants (12, 24 and 48 for its 192-px input), which a copy of
    the file gets scaled to the look's size, found through LiteRT's own flatbuffer schema. The rest of
    the network is convolutions, so a face reads as it would in a 192-px look."""

    def __init__(self, threads: int = 1) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self._threads = threads
        self._file = bytearray(model_path().read_bytes())
        model = schema.Model.GetRootAs(self._file, 0)
        graph = model.Subgraphs(0)
        self._sizes = []  # byte offsets of each upsampling step's (height, width) int32 constant
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            resize = schema.BuiltinOperator.RESIZE_BILINEAR
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != resize:
                continue
            data = model.Buffers(graph.Tensors(op.Inputs(1)).Buffer()).DataAsNumpy()
            offset = data.__array_interface__["data"][0] - np.frombuffer(self._file, np.uint8).ctypes.data
            size = np.frombuffer(self._file, np.int32, 2, offset)
            self._sizes.append((offset, INPUT_PX // int(size[0])))  # offset, the step's stride
        if len(self._sizes) != 3:
            raise ValueError(f"{MODEL_FILE}: expected three upsampling steps, found {len(self._sizes)}")
        self._kept: OrderedDict[tuple[int, int], Look] = OrderedDict()

    def __call__(self, height: int, width: int) -> Look:
        """The network ready for looks `height` × `width` (each a multiple of `STRIDE_PX`)."""
        if height % STRIDE_PX or width % STRIDE_PX:
            raise ValueError(f"a look's sides are multiples of {STRIDE_PX}, not {height}×{width}")
        key = (height, width)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        from ai_edge_litert.interpreter import Interpreter

        content = bytearray(self._file)
        for offset, stride in self._sizes:
            content[offset : offset + 8] = np.array([height // stride, width // stride], np.int32).tobytes()
        interpreter = Interpreter(model_content=bytes(content), num_threads=self._threads)
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [1, height, width, 3])
        interpreter.allocate_tensors()
        self._kept[key] = look = Look.of(interpreter, height, width)
        if len(self._kept) > SIZED_KEPT:
            self._kept.popitem(last=False)
        return look


class BlazeFace:
    """RGB uint8 array in, (N, 5) proposals out: x1, y1, x2, y2, score in the array's pixels."""

    def __init__(self, threads: int = 1) -> None:
        self._models = SizedModels(threads)
        self._models(INPUT_PX, INPUT_PX)  # the whole-photo look's, ready before the first photo

    def look(self, rgb: np.ndarray, scale: float | None = None) -> np.ndarray:
        """Proposals in one look at the photo scaled by `scale` (by default to `INPUT_PX` on its longer
        side), padded at the bottom and right to a look of whole strides (`INPUT_PX` square at least)."""
        height, width = rgb.shape[:2]
        scale = scale or INPUT_PX / max(height, width)
        return self._read(_resized(rgb, scale), scale)

    def _read(self, pixels: np.ndarray, scale: float) -> np.ndarray:
        """BlazeFace on `pixels` (the photo scaled by `scale`): proposals in photo pixels."""
        height, width = (max(INPUT_PX, -(-side // STRIDE_PX) * STRIDE_PX) for side in pixels.shape[:2])
        look = self._models(height, width)
        canvas = np.zeros((height, width, 3), np.float32)
        canvas[: pixels.shape[0], : pixels.shape[1]] = pixels.astype(np.float32) / 127.5 - 1.0
        look.interpreter.set_tensor(look.input, canvas[None])
        look.interpreter.invoke()
        raw = look.interpreter.get_tensor(look.boxes)[0]
        logits = look.interpreter.get_tensor(look.logits)[0, :, 0]
        best = np.argsort(-logits)[: MAX_PROPOSALS * len(logits) // (INPUT_PX // 4) ** 2]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[best], -80, 80)))
        keep = best[scores >= MIN_SCORE]
        scores = scores[scores >= MIN_SCORE]
        centre = look.anchors[keep] + raw[keep, :2]  # look pixels
        half = raw[keep, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1) / scale
        return np.concatenate([boxes, scores[:, None]], axis=1)

    def propose(self, rgb: np.ndarray) -> np.ndarray:
        """Proposals from the whole photo and, where it is larger than a tile (`TILE_PX`), from a look at
        it scaled as such a tile is read, merged where they overlap (`MERGE_IOU`)."""
        return self.looks(rgb)[0]

    def looks(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`propose`'s proposals, and the photo as its scaled look read it (None where the photo is no
        larger than a tile): a small copy that later searches of the photo scale again more cheaply."""
        if max(rgb.shape[:2]) <= TILE_PX:
            return merge(self.look(rgb)), None
        scale, whole = INPUT_PX / TILE_PX, INPUT_PX / max(rgb.shape[:2])
        scaled = _resized(rgb, scale)
        found = [self._read(_resized(scaled, whole / scale), whole), self._read(scaled, scale)]
        return merge(np.concatenate(found, axis=0)), scaled


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


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
