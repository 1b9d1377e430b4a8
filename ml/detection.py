"""Face detection: BlazeFace proposes, MTCNN decides; on LiteRT, without TensorFlow.

MTCNN's RNet and ONet (`ml.refine`; the `mtcnn` package's weights, exported) judge every candidate and
place its box and five landmarks. The candidates come from BlazeFace (`ml.proposals`: one look at the
whole photo, 3 ms, and one at the photo scaled as a 320-px tile is read, 11 ms for 640×480), which
reaches faces of about `SMALL_FACE_PX` at detection scale; and from MTCNN's PNet over an image pyramid
on LiteRT (`ml.pyramid`) for the smaller faces of a photo scaled to under `PYRAMID_BELOW_SCALE` (a
phone photo), and for every size in a photo where nothing else was found. With `proposer="pyramid"`
the `mtcnn` package's own pipeline runs instead, on TensorFlow (the training chips, comparisons). Measured by
`python bench/detector_recall.py [--proposer pyramid]` (ml/MODEL_CARD.md, "Detector").

Thresholds (documented in the README and the model card):
- a detection is kept when MTCNN's final confidence is at least `MIN_CONFIDENCE` (0.90) and its box is
  at least `MIN_FACE_PX` (20) pixels on its shorter side, measured in the original image;
- photos are scaled so that their longer side is at most `DETECT_MAX_SIDE` (800) pixels before detection,
  and boxes and landmarks are mapped back to original pixels; in a photo scaled down, MTCNN searches
  faces down to `MIN_FACE_PX` measured in the original photo, as far as its smallest window
  (`MTCNN_WINDOW_PX`, 12 px at detection scale) allows, instead of its default 20 px at detection
  scale, which in a 4032×3024 phone photo ignored every face under 100 px (`python
  bench/detector_recall.py --size 4032x3024 --tiles 60-300`);
- small photos (tight face crops, longer side under 400 px) are padded by a replicated border so that a
  face touching the frame is still found whole;
- in larger photos, faces cut by the frame are searched once more (`ml.frame_cut`), in the photo
  bordered by its own mirror image, which makes a face cut near its middle whole again;
- a photo where no face is found is searched again turned a quarter turn each way and upside down
  (`TURNS`): a phone photo whose orientation tag was lost. The turn with the most confident face wins,
  if the photo as it came shows not even a weak face (at `FALLBACK_THRESHOLDS`) or the turned face is
  near-certain (`TURNED_MIN_CONFIDENCE`); its boxes and landmarks are mapped back onto the photo;
- `fallback_face` (the `whole_image_fallback` option, for a photo its sender says is a face): where none
  passes the above, MTCNN runs again with its three stage thresholds lowered to `FALLBACK_THRESHOLDS`
  and the most confident face whose box spans at least `FALLBACK_MIN_SHARE` of the photo's shorter side
  is taken, aligned by its own landmarks; only where there is none is the whole frame taken as the face.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

MIN_CONFIDENCE = 0.90
MIN_FACE_PX = 20
DETECT_MAX_SIDE = 800
#: MTCNN's proposal network looks through a 12-px window: the smallest face it can find at any scale.
MTCNN_WINDOW_PX = 12
PAD_BELOW = 400
_PAD_SHARE = 0.2
#: MTCNN's proposal, refinement and output thresholds for `fallback_face` (the package's own: 0.6, 0.7, 0.8).
FALLBACK_THRESHOLDS = {"threshold_pnet": 0.5, "threshold_rnet": 0.5, "threshold_onet": 0.5}
FALLBACK_MIN_SHARE = 0.3
#: Quarter turns (`numpy.rot90`'s k: 1 anticlockwise, 3 clockwise, 2 upside down) tried where none is found.
TURNS = (1, 3, 2)
#: Where the photo as it came shows a weak face, a turned face must be this sure. Measured on training
#: photos (all upright; `python bench/turned_faces.py`): of the 465 without a face, 52 show one turned
#: (at 0.90) and 6 of those are kept; of 255 faces turned sideways or upside down that the detector then
#: missed, 242 are found (254 at 0.90 alone).
TURNED_MIN_CONFIDENCE = 0.99

#: Faces smaller than this (box side, pixels at detection scale) may be missed where larger ones are found:
#: BlazeFace's reach in its look at the photo scaled as a `ml.proposals.TILE_PX` tile is read
#: (`MIN_FACE_INPUT_PX` at that scale).
SMALL_FACE_PX = 27
#: In a photo scaled to less than this for detection (a phone photo), faces under `SMALL_FACE_PX` there
#: are sizeable faces (54 px and more), searched by PNet's pyramid (`ml.pyramid`) at those sizes only.
PYRAMID_BELOW_SCALE = 0.5
#: Where MTCNN's RNet and ONet get their candidate boxes: BlazeFace (`ml.proposals`), or MTCNN's own PNet
#: over an image pyramid (slower; kept for comparison and for the weak-face search).
PROPOSERS = ("blazeface", "pyramid")

#: Order of the five landmarks everywhere in `ml`: eyes, nose, mouth corners, left/right as seen in the image
#: (for a face found turned, as seen with the face upright, so that alignment turns it upright).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
    confidence: float
    landmarks: np.ndarray  # (5, 2) float, original pixels, LANDMARK_NAMES order


class FaceDetector:
    """MTCNN behind a small, safe interface: RGB array in, list of `Detection` out, largest first."""

    def __init__(
        self,
        min_confidence: float = MIN_CONFIDENCE,
        min_face_px: int = MIN_FACE_PX,
        cut_faces: bool = True,
        proposer: str = "blazeface",
    ) -> None:
        if proposer not in PROPOSERS:
            raise ValueError(f"proposer must be one of {PROPOSERS}, not {proposer!r}")
        self.proposer = proposer
        self._blazeface = None
        self._mtcnn = self._cut_mtcnn = None  # the pyramid's pipelines, made on first use (TensorFlow)
        if proposer == "blazeface":
            from ml.proposals import BlazeFace
            from ml.pyramid import Pyramid
            from ml.refine import Nets
            from ml.runtime import litert_threads

            threads = litert_threads()  # as the model's: every core, or AGEGENDER_TF_THREADS (the worker: 1)
            self._blazeface = BlazeFace(threads)
            self._small_faces = Pyramid(threads)
            self._nets = Nets(threads)
        else:
            self._load_pyramid()
        self.min_confidence = min_confidence
        self.min_face_px = min_face_px
        self.cut_faces = cut_faces  # the frame-cut search (`_cut_faces`); off only to measure it

    @property
    def mtcnn(self):
        """The `mtcnn` package's whole pipeline, PNet's pyramid first (imports TensorFlow on first use)."""
        if self._mtcnn is None:
            self._load_pyramid()
        return self._mtcnn

    @mtcnn.setter
    def mtcnn(self, pipeline) -> None:  # tests share one set of compiled networks between detectors
        self._mtcnn = pipeline
        self._cut_mtcnn = None

    def _load_pyramid(self) -> None:
        from mtcnn import MTCNN

        from ml.frame_cut import AcrossTheFrame
        from ml.runtime import tensorflow

        self._tf = tf = tensorflow()
        if self._mtcnn is None:
            self._mtcnn = MTCNN()
            # The package calls its three Keras networks eagerly, PNet once per pyramid scale; compiled
            # once here for any image size (one trace each), detection takes about half the time, same
            # boxes. The concrete function is called directly: no signature matching on each call.
            for stage in self._mtcnn.stages:
                if getattr(stage, "_model", None) is not None:
                    stage._model = tf.function(
                        stage._model, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]
                    ).get_concrete_function()
        # The frame-cut search's own pipeline, on the same compiled networks: between PNet and RNet, the
        # proposals that cannot be a face cut by the frame are dropped (`_AcrossTheFrame`).
        pnet, *refine = self._mtcnn.stages
        self._cut_mtcnn = MTCNN(stages=[pnet, AcrossTheFrame(), *refine])
        _normalise_once()
        logging.getLogger("mtcnn").setLevel(logging.ERROR)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.detect_many([rgb])[0]

    def fallback_face(self, rgb: np.ndarray) -> Detection:
        """The one face assumed in a photo where `detect` found none (see the module's docstring): a weak
        detection that fills much of the frame, else the whole frame with the landmarks of a tight crop
        (`ml.alignment.whole_image_landmarks`) and confidence 0."""
        from ml.alignment import whole_image_landmarks

        height, width = rgb.shape[:2]
        shorter = min(height, width)
        large = [
            d
            for d in self.weak_faces(rgb)
            if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= FALLBACK_MIN_SHARE * shorter
        ]
        if large:
            return max(large, key=lambda d: d.confidence)
        return Detection(
            box=(0.0, 0.0, float(width), float(height)),
            confidence=0.0,
            landmarks=whole_image_landmarks(width, height),
        )

    def detect_many(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Detect faces in several RGB arrays, each exactly as `detect` would (see `detect_as_given`);
        photos with none are searched again turned (`TURNS`)."""
        found, proposals, smaller = self._given(images)
        for i, faces in enumerate(found):
            if not faces and self._blazeface is not None:
                # a face under BlazeFace's reach (`SMALL_FACE_PX`) may be alone in the photo: the pyramid
                faces = found[i] = self._given([images[i]], small=True, looked=[proposals[i]])[0][0]
            faces.extend(self._cut_faces(images[i], faces, proposals[i], smaller[i]))
            faces.sort(key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), reverse=True)
            if not faces:
                found[i] = self._detect_turned(images[i])
        return found

    def _cut_faces(
        self,
        rgb: np.ndarray,
        found: list[Detection],
        proposals: np.ndarray | None = None,
        smaller: np.ndarray | None = None,
    ) -> list[Detection]:
        """Faces that the frame cuts through and the search as given missed (`ml.frame_cut`)."""
        from ml.frame_cut import cut_faces

        return cut_faces(self, rgb, found, proposals, smaller)

    def _detect_turned(self, rgb: np.ndarray) -> list[Detection]:
        turned = self.detect_as_given([np.ascontiguousarray(np.rot90(rgb, k)) for k in TURNS])
        best = max(
            zip(TURNS, turned, strict=True), key=lambda kf: max((d.confidence for d in kf[1]), default=0)
        )
        k, faces = best
        if not faces or (max(d.confidence for d in faces) < TURNED_MIN_CONFIDENCE and self.weak_faces(rgb)):
            return []
        height, width = rgb.shape[:2]
        back = []
        for d in faces:
            x1, y1, x2, y2 = d.box
            corners = unturn(np.array([[x1, y1], [x2, y2]]), k, width, height)
            box = (*corners.min(axis=0), *corners.max(axis=0))
            back.append(
                Detection(tuple(float(v) for v in box), d.confidence, unturn(d.landmarks, k, width, height))
            )
        return back

    def weak_faces(self, rgb: np.ndarray) -> list[Detection]:
        """Every face MTCNN sees in the photo as it came with its thresholds at `FALLBACK_THRESHOLDS`."""
        prepared = self._prepare(rgb)
        if prepared is None:
            return []
        if self._blazeface is not None:  # BlazeFace's and the whole LiteRT pyramid's candidates
            thresholds = {k: v for k, v in FALLBACK_THRESHOLDS.items() if k != "threshold_pnet"}
            work, search = prepared[0], self._search_px(prepared[1])
            candidates = self._small_faces.candidates(
                work, search, threshold=FALLBACK_THRESHOLDS["threshold_pnet"]
            )
            proposals = self._blazeface.propose(work)
            raw = self._run(work, 0.0, proposals=proposals, candidates=candidates, **thresholds)
        else:
            raw = self._run(prepared[0], self._search_px(prepared[1]), pyramid=True, **FALLBACK_THRESHOLDS)
        return self.convert_raw(raw, *prepared[1:], rgb.shape, min_confidence=0.0)

    def detect_as_given(self, images: list[np.ndarray], pyramid: bool = False) -> list[list[Detection]]:
        return self._given(images, pyramid)[0]

    def _given(
        self,
        images: list[np.ndarray],
        pyramid: bool = False,
        small: bool = False,
        looked: list[np.ndarray | None] | None = None,
    ) -> tuple[list[list[Detection]], list[np.ndarray | None], list[np.ndarray | None]]:
        """Faces in each photo as it came, BlazeFace's proposals there in the photo's pixels (None
        for the pyramid), which the frame-cut search reads again instead of looking once more, and a
        smaller copy of the photo where BlazeFace made one (`BlazeFace.looks`); `looked`: those
        proposals from an earlier search of the same photos, not looked for again."""
        prepared = [self._prepare(rgb) for rgb in images]
        raw: list[list[dict]] = [[] for _ in images]
        proposals: list[np.ndarray | None] = [None for _ in images]
        smaller: list[np.ndarray | None] = [None for _ in images]
        # Each photo alone: the package's batches move the faces it finds by up to 10 px (and can add or
        # lose one) against the same photo alone, even among photos of one size, so that a photo's
        # answer would depend on the photos detected with it. Alone, it is what the service finds for
        # it, in training chips too. Batching was about twice as fast.
        for i, p in enumerate(prepared):
            if p is None:
                continue
            if self._blazeface is not None and not pyramid:
                work, scale, pad = p
                if looked is not None and looked[i] is not None:  # back into detection pixels
                    proposals[i] = np.concatenate([looked[i][:, :4] * scale + pad, looked[i][:, 4:]], 1)
                else:
                    proposals[i], smaller[i] = self._blazeface.looks(work)
                # faces under BlazeFace's reach from PNet's pyramid, at its costly large scales only; every
                # size where nothing was found (`small`)
                candidates = None
                if small or scale < PYRAMID_BELOW_SCALE:
                    reach = None if small else SMALL_FACE_PX
                    candidates = self._small_faces.candidates(work, self._search_px(scale), reach)
                raw[i] = self._run(work, 0.0, proposals=proposals[i], candidates=candidates)
                proposals[i] = np.concatenate([(proposals[i][:, :4] - pad) / scale, proposals[i][:, 4:]], 1)
            else:
                raw[i] = self._run(p[0], self._search_px(p[1]), pyramid=True)
        found = [
            self.convert_raw(raw[i], *prepared[i][1:], images[i].shape) if prepared[i] is not None else []
            for i in range(len(images))
        ]
        return found, proposals, smaller

    def _prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, float, int] | None:
        height, width = rgb.shape[:2]
        if min(height, width) < self.min_face_px:
            return None
        scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
        work = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            work = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        pad = 0
        if max(work.shape[:2]) < PAD_BELOW:
            pad = round(_PAD_SHARE * max(work.shape[:2]))
            work = np.pad(work, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        return work, scale, pad

    def convert_raw(
        self,
        raw: list[dict],
        scale: float,
        pad: int,
        shape: tuple[int, ...],
        min_confidence: float | None = None,
    ) -> list[Detection]:
        height, width = shape[:2]
        min_confidence = self.min_confidence if min_confidence is None else min_confidence
        found = []
        for item in raw:
            confidence = float(item["confidence"])
            x, y, w, h = (float(v) for v in item["box"])
            points = item["keypoints"]
            landmarks = np.array([points[name] for name in LANDMARK_NAMES], dtype=np.float64)
            box = (np.array([x, y, x + w, y + h]) - pad) / scale
            landmarks = (landmarks - pad) / scale
            box[[0, 2]] = box[[0, 2]].clip(0, width)
            box[[1, 3]] = box[[1, 3]].clip(0, height)
            # MTCNN clips a box to its last whole pixel at detection scale: one ending there reaches the edge
            edge = 1.0 / scale + 1e-6
            box[2] = width if box[2] >= width - edge else box[2]
            box[3] = height if box[3] >= height - edge else box[3]
            short_side = min(box[2] - box[0], box[3] - box[1])
            if confidence < min_confidence or short_side < self.min_face_px:
                continue
            found.append(
                Detection(box=tuple(float(v) for v in box), confidence=confidence, landmarks=landmarks)
            )
        found.sort(key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), reverse=True)
        return found

    def _search_px(self, scale: float) -> float:
        """The smallest face MTCNN is asked to find in a photo scaled by `scale` for detection, in pixels at
        that scale: `min_face_px` of the original photo, but not under MTCNN's window. 20 for a photo
        detected at its own size, as the package's default; 12 for one scaled to half or less."""
        return float(max(MTCNN_WINDOW_PX, self.min_face_px * scale))

    def _run(
        self, work: np.ndarray, search_px: float, cut: bool = False, pyramid: bool = False, **options
    ) -> list[dict]:
        """MTCNN's raw faces in one prepared photo (see `_search_px`), from BlazeFace's candidates unless
        `pyramid` (or the detector's `proposer`) asks for PNet's; `cut`: the frame-cut search's pipeline;
        `options` go to the stages (stage thresholds, pyramid step, `_AcrossTheFrame`'s frame)."""
        # An odd photo (the package raises TensorFlow errors on some pyramid shapes, and prints to
        # stdout) gets no face, so that it never crashes the caller.
        if self._blazeface is not None and not pyramid:
            try:
                return self._refined(work, cut=cut, **options)
            except (ValueError, IndexError):
                return []
        options.pop("proposals", None)
        mtcnn = self._cut_mtcnn if cut else self.mtcnn
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                result = mtcnn.detect_faces([work], min_face_size=search_px, **options)
        except (self._tf.errors.InvalidArgumentError, ValueError, IndexError):
            return []
        if result and isinstance(result[0], dict):  # the one photo's faces, not wrapped in a list
            return list(result)
        return list(result[0]) if len(result) == 1 else []

    def _refined(
        self,
        work: np.ndarray,
        cut: bool,
        frame=None,
        scale_factor=None,
        proposals=None,
        candidates=None,
        **thresholds,
    ) -> list[dict]:
        """BlazeFace's candidates (`ml.proposals`) through RNet and ONet (`ml.refine`); the frame-cut
        search looks at its small photo whole (its faces are large there), and keeps only the candidates
        across the frame."""
        from ml.mtcnn_boxes import square
        from ml.proposals import as_mtcnn_boxes
        from ml.refine import refine

        proposals = self._blazeface.propose(work) if proposals is None else proposals
        boxes = square(as_mtcnn_boxes(proposals))
        if candidates is not None and len(candidates):  # PNet's, square already
            boxes = np.concatenate([boxes, candidates]).astype(np.float32)
        from ml.frame_cut import AcrossTheFrame

        between = AcrossTheFrame() if cut else None
        return refine(self._nets, work, boxes, between=between, frame=frame, **thresholds)


def _normalise_once() -> None:
    """Make `mtcnn` hand its stages the normalised photo as one TensorFlow tensor instead of a NumPy
    array, which each pyramid scale and each stage converted again (a quarter of a 640×480 photo's
    detection time); the same values and dtype, so the same faces to the bit
    (`tests/ml/test_detection.py`)."""
    import mtcnn.mtcnn as package

    if getattr(package.standarize_batch, "once", False):
        return
    plain = package.standarize_batch

    def standarize_batch(images_raw, normalize=True, justification="center"):
        images, shapes, pads = plain(images_raw, normalize=normalize, justification=justification)
        return package.tf.convert_to_tensor(images), shapes, pads

    standarize_batch.once = True
    standarize_batch.plain = plain
    package.standarize_batch = standarize_batch


def unturn(points: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """(N, 2) x, y points in `numpy.rot90(image, k)` → the same points in `image` (`width` × `height`)."""
    x, y = np.asarray(points, dtype=np.float64).T
    if k % 4 == 1:  # turned anticlockwise: a point (x, y) there was at (width - y, x)
        x, y = width - y, x
    elif k % 4 == 3:
        x, y = y, height - x
    elif k % 4 == 2:
        x, y = width - x, height - y
    return np.stack([x, y], axis=1)
