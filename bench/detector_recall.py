"""Detector recall on group photos composed from real labelled faces.

    python bench/detector_recall.py [--photos 20] [--faces 6] [--seed 0] [--size 1600x1200] [--tiles 90-400]
        [--cut 0.3] [--selfie] [--proposer blazeface|pyramid]

Each photo is a canvas (1600×1200 by default; a blurred, enlarged crop of another dataset photo as
background) with N real face photos from UTKFace and All-Age-Faces pasted at random sizes (90–400 px by
default) without overlap. A
placed face counts as found when one detected box has its centre inside the placed photo's central
region. Prints recall overall and by face size, and false detections per photo.

`--cut SHARE`: that share of the faces is placed across the frame's edge (left, right, top or bottom),
with 30–50% of the face photo outside it (UTKFace and AAF crops are tight: at 50% the frame cuts through
the nose); recall is printed for whole and cut faces apart, a cut face counting as found when a box's
centre lies in its visible part. `--selfie` prints what is found in the astronaut "group selfie"
(`cut_selfie`: seven copies, three cut by the frame) at several depths of cut.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.detection import PROPOSERS, FaceDetector  # noqa: E402
from ml.training.data import DATASETS_DIR, read_labels  # noqa: E402


def compose(samples, rng: random.Random, faces: int, size=(1600, 1200), tiles=(90, 400), cut: float = 0.0):
    """A photo with `faces` placed face photos, a share `cut` of them across the frame's edge; returns the
    photo, the placed boxes clipped to the frame, and for each whether the frame cuts it."""
    width, height = size
    background = (
        Image.open(rng.choice(samples).path).convert("RGB").resize(size).filter(ImageFilter.GaussianBlur(25))
    )
    placed: list[tuple[int, int, int, int]] = []
    cuts: list[bool] = []
    attempts = 0
    while len(placed) < faces and attempts < 500:
        attempts += 1
        side = rng.randint(*tiles)
        x, y = rng.randint(0, width - side), rng.randint(0, height - side)
        is_cut = rng.random() < cut
        if is_cut:  # 30-50% of the face photo outside one edge
            outside = round(side * rng.uniform(0.3, 0.5))
            edge = rng.choice("lrtb")
            x = {"l": -outside, "r": width - side + outside}.get(edge, x)
            y = {"t": -outside, "b": height - side + outside}.get(edge, y)
        box = (x, y, x + side, y + side)
        if any(not (box[2] < p[0] or box[0] > p[2] or box[3] < p[1] or box[1] > p[3]) for p in placed):
            continue
        tile = Image.open(rng.choice(samples).path).convert("RGB")
        tile = tile.crop(_square(tile)).resize((side, side), Image.Resampling.LANCZOS)
        background.paste(tile, box[:2])
        placed.append((max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)))
        cuts.append(is_cut)
    return np.asarray(background), placed, cuts


def cut_selfie(face: Image.Image, cut: float = 0.5, size=(1600, 1200), side: int = 300):
    """A "group selfie": seven copies of `face` (a loose square crop), four whole and three across the
    left, right and bottom edges with `cut` of the crop outside. Returns the photo and the seven visible
    boxes, the cut ones last."""
    width, height = size
    canvas = Image.new("RGB", size, (120, 130, 140))
    outside, inside = round(side * cut), side - round(side * cut)
    spots = [(250, 150), (650, 120), (1050, 160), (450, 600)]
    spots += [(-outside, 560), (width - inside, 540), (900, height - inside)]
    tile = face.resize((side, side), Image.Resampling.LANCZOS)
    boxes = []
    for x, y in spots:
        canvas.paste(tile, (x, y))
        boxes.append((max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)))
    return np.asarray(canvas), boxes


def found_in(detections, boxes) -> list[bool]:
    """For each box, whether some detection's box centre lies inside it."""
    centres = [((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2) for d in detections]
    return [any(x1 < cx < x2 and y1 < cy < y2 for cx, cy in centres) for x1, y1, x2, y2 in boxes]


def selfie_figures(detector) -> None:
    from skimage import data

    face = Image.fromarray(data.astronaut()).crop((110, 20, 340, 250))
    for cut in (0.4, 0.5, 0.55, 0.6):
        photo, boxes = cut_selfie(face, cut)
        started = time.perf_counter()
        hits = found_in(detector.detect(photo), boxes)
        print(
            f"astronaut selfie, {cut:.0%} of three crops outside: {sum(hits)} of 7 found "
            f"({sum(hits[4:])} of the 3 cut) in {time.perf_counter() - started:.2f} s"
        )


def _square(image: Image.Image) -> tuple[int, int, int, int]:
    w, h = image.size
    side = min(w, h)
    top = (h - side) // 3 if h > w else 0
    left = (w - side) // 2
    return left, top, left + side, top + side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--faces", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="1600x1200", help="photo size, WIDTHxHEIGHT")
    parser.add_argument("--tiles", default="90-400", help="side of the pasted face photos, MIN-MAX px")
    parser.add_argument("--cut", type=float, default=0.0, help="share of faces placed across the frame")
    parser.add_argument("--selfie", action="store_true", help="also the astronaut group selfie")
    parser.add_argument("--no-cut-search", action="store_true", help="without the frame-cut search (before)")
    parser.add_argument(
        "--proposer", choices=PROPOSERS, default=PROPOSERS[0], help="where RNet's candidates come from"
    )
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    tiles = tuple(int(v) for v in args.tiles.split("-"))
    edges = sorted({tiles[0], *(e for e in (150, 250) if tiles[0] < e < tiles[1]), tiles[1]})
    bands = [f"{low}-{high}" for low, high in zip(edges, edges[1:], strict=False)]
    folders = [DATASETS_DIR / "utkface", DATASETS_DIR / "aaf-train"]
    if not all((f / "labels.csv").is_file() for f in folders):
        print(f"datasets not found under {DATASETS_DIR}", file=sys.stderr)
        return 2
    samples = [s for f in folders for s in read_labels(f)]
    rng = random.Random(args.seed)
    detector = FaceDetector(cut_faces=not args.no_cut_search, proposer=args.proposer)
    if args.selfie:
        selfie_figures(detector)
    found_by_size: dict[str, list[bool]] = {band: [] for band in bands}
    false_alarms, seconds = 0, []
    by_kind: dict[str, list[bool]] = {"whole": [], "cut": []}
    for _ in range(args.photos):
        photo, placed, cuts = compose(samples, rng, args.faces, size, tiles, args.cut)
        started = time.perf_counter()
        detections = detector.detect(photo)
        seconds.append(time.perf_counter() - started)
        centres = [((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2) for d in detections]
        matched = set()
        for (x1, y1, x2, y2), is_cut in zip(placed, cuts, strict=True):
            margin = 0 if is_cut else (x2 - x1) * 0.15
            hits = [
                i for i, (cx, cy) in enumerate(centres) if x1 + margin < cx < x2 - margin and y1 < cy < y2
            ]
            matched.update(hits)
            side = x2 - x1
            key = next((b for b in bands if side < int(b.split("-")[1])), bands[-1])
            found_by_size[key].append(bool(hits))
            by_kind["cut" if is_cut else "whole"].append(bool(hits))
        false_alarms += len(detections) - len(matched)
    everything = [f for values in found_by_size.values() for f in values]
    print(f"photos: {args.photos} of {size[0]}x{size[1]}, {len(everything)} placed faces")
    print(f"recall: {np.mean(everything):.3f}")
    for key, values in found_by_size.items():
        if values:
            print(f"  faces {key} px: recall {np.mean(values):.3f} ({len(values)})")
    for kind, values in by_kind.items():
        if values and args.cut:
            print(f"  {kind} faces: recall {np.mean(values):.3f} ({len(values)})")
    print(f"false detections per photo: {false_alarms / args.photos:.2f}")
    print(f"detector median seconds per photo: {np.median(seconds):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
