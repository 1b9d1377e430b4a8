"""Faces cut by the frame's edge: the search that `ml.detection.FaceDetector` runs after the search as given.

The photo, scaled so that its longer side is `CUT_MAX_SIDE`, is padded on every side by its own mirror
image (`CUT_PAD_SHARE` of that side), which makes a face cut near its middle whole again. Its candidates
are BlazeFace's from the search as given, each also completed by its mirror image where it lies near an
edge, and BlazeFace's one look at the padded photo (read as a `CUT_TILE_PX` tile would be); or, with the
pyramid proposer,
MTCNN's PNet. Only candidates crossing the frame go on to RNet and ONet (`AcrossTheFrame`). A face found
there is kept when its box touches the frame (not two opposite sides of it) with at least
`CUT_MIN_SEEN` of it inside the photo, its nose lies inside the photo (a mirrored ghost's lies in the
border) and no face already found holds that nose. Measured by `python bench/detector_recall.py --cut 0.5
--selfie`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The frame-cut search (see the module's docstring): detection size, mirrored border, smallest face there.
CUT_MAX_SIDE = 320
CUT_PAD_SHARE = 0.2
#: (20, the package's default, at most: above it, `mtcnn` 1.0.0's pyramid can end under PNet's 12-px
#: window for some photo sizes, and then it raises and the photo gets no face at all; search larger
#: faces with a smaller `CUT_MAX_SIDE` instead)
CUT_MIN_FACE_PX = 20
#: Its pyramid's step (the package's: 0.709): coarser, a third less time, the same faces in
#: `bench/detector_recall.py --cut 0.5 --selfie`; only faces the search as given missed are taken from it.
CUT_SCALE_FACTOR = 0.5
#: The frame-cut search's one BlazeFace look reads the padded photo scaled by 192 / CUT_TILE_PX (0.5: a
#: 224 × 184 look for a 4:3 photo). A second look at 192 px, as in the search as given, found nothing
#: more here (`bench/detector_recall.py --cut 0.5 --selfie`).
CUT_TILE_PX = 384
#: A cut face has at least this share of its box inside the photo.
CUT_MIN_SEEN = 0.4


def cut_faces(
    detector,
    rgb: np.ndarray,
    found: list,
    proposals: np.ndarray | None = None,
    smaller: np.ndarray | None = None,
) -> list:
    """`detector`'s faces in `rgb` that the frame cuts and `found` (the search as given) lacks;
    `proposals`: BlazeFace's from that search, in the photo's pixels (None for the pyramid); `smaller`:
    a smaller copy of the photo (the same shape) to scale from, which is cheaper."""
    from ml.detection import MTCNN_WINDOW_PX, PAD_BELOW
    from ml.proposals import INPUT_PX

    height, width = rgb.shape[:2]
    if not detector.cut_faces or max(height, width) < PAD_BELOW:  # a tight crop is padded whole already
        return []
    scale = CUT_MAX_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    source = rgb if smaller is None or max(smaller.shape[:2]) < max(size) else smaller
    work = np.asarray(Image.fromarray(source).resize(size, Image.Resampling.BILINEAR))
    pad = round(CUT_PAD_SHARE * CUT_MAX_SIDE)
    work = np.pad(work, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    raw = []
    inner = (pad, pad, pad + size[0], pad + size[1])
    search = float(max(MTCNN_WINDOW_PX, CUT_MIN_FACE_PX))
    options = {"scale_factor": CUT_SCALE_FACTOR, "frame": inner}
    if proposals is not None:  # BlazeFace's from the search as given, in this small photo's pixels
        proposals = mirror_completed(proposals, width, height)
        reused = np.concatenate([proposals[:, :4] * scale + pad, proposals[:, 4:]], 1)
        looked = detector._blazeface.look(work, INPUT_PX / CUT_TILE_PX)
        options["proposals"] = np.concatenate([reused, looked])
    if detector._blazeface is None and detector._cut_mtcnn is None:
        detector._load_pyramid()
    for item in detector._run(work, search, cut=True, **options):
        x, y, w, h = (float(v) for v in item["box"])
        seen_w = min(x + w, inner[2]) - max(x, inner[0])
        seen_h = min(y + h, inner[3]) - max(y, inner[1])
        # the nose of a face cut through its middle lies on the edge, found a little to either side of
        # it (a tenth of the whole face's side); a mirrored ghost's lies in the border
        nose_x, nose_y = item["keypoints"]["nose"]
        slack = 0.1 * min(w, h)
        inside = inner[0] - slack < nose_x < inner[2] + slack and inner[1] - slack < nose_y < inner[3] + slack
        # a face this small, or mostly in the mirrored border, is a pattern of the mirroring (corners)
        seen = max(seen_w, 0) * max(seen_h, 0) >= CUT_MIN_SEEN * w * h
        if min(w, h) >= CUT_MIN_FACE_PX and seen and inside:
            raw.append(item)
    kept = []
    for d in detector.convert_raw(raw, scale, pad, rgb.shape):
        x1, y1, x2, y2 = d.box  # clipped to the photo
        cx, cy = d.landmarks[2]  # the nose
        touches = x1 <= 0 or y1 <= 0 or x2 >= width or y2 >= height
        # one spanning the whole photo is a close-up, or a blurred backdrop, not a face the frame cut
        touches = touches and not ((x1 <= 0 and x2 >= width) or (y1 <= 0 and y2 >= height))
        known = any(holds(f.box, cx, cy) for f in found + kept)
        if touches and not known:
            kept.append(d)
    return kept


def mirror_completed(proposals: np.ndarray, width: int, height: int, near: float = 0.3) -> np.ndarray:
    """BlazeFace's proposals (x1, y1, x2, y2, score) plus, for each within `near` of its size of an edge,
    the box its visible part makes with its mirror image across that edge: where the frame cut a face,
    the mirrored border of the frame-cut search shows it whole there, centred on the edge."""
    x1, y1, x2, y2, score = proposals.T
    reach_x, reach_y = near * (x2 - x1), near * (y2 - y1)
    variants = [proposals]
    for close, box in (
        (x1 < reach_x, (-x2, y1, x2, y2)),
        (x2 > width - reach_x, (x1, y1, 2 * width - x1, y2)),
        (y1 < reach_y, (x1, -y2, x2, y2)),
        (y2 > height - reach_y, (x1, y1, x2, 2 * height - y1)),
    ):
        variants.append(np.stack([*box, score], axis=1)[close])
    return np.concatenate(variants, axis=0)


def holds(box: tuple[float, float, float, float], x: float, y: float) -> bool:
    """Whether (x, y) lies in `box` grown by a tenth of its shorter side: a face found cut by the frame is
    found again by the frame-cut search with its nose on the edge, a pixel or two past the first box."""
    x1, y1, x2, y2 = box
    slack = 0.1 * min(x2 - x1, y2 - y1)
    return x1 - slack <= x <= x2 + slack and y1 - slack <= y <= y2 + slack


class AcrossTheFrame:
    """A stage between MTCNN's PNet and RNet for the frame-cut search: keeps only the proposals that cross
    the photo's frame (`frame`: x1, y1, x2, y2 of the photo inside its mirrored border). A proposal well
    inside the photo was searched already, one wholly in the border is a mirrored ghost; dropping them
    spares RNet and ONet most of their work."""

    id = 100
    name = "Across the frame"

    def __call__(self, bboxes_batch, frame=None, **kwargs):
        if frame is None or len(bboxes_batch) == 0:
            return bboxes_batch
        x1, y1, x2, y2 = (bboxes_batch[:, i] for i in range(1, 5))
        margin = 0.1 * np.minimum(x2 - x1, y2 - y1)  # RNet may still move a box by about this much
        left, top, right, bottom = frame
        inside = (x1 > left + margin) & (y1 > top + margin) & (x2 < right - margin) & (y2 < bottom - margin)
        outside = (x2 <= left) | (x1 >= right) | (y2 <= top) | (y1 >= bottom)
        return bboxes_batch[~inside & ~outside]
