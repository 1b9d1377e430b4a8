"""Detector recall on group photos composed from real labelled faces.

    python bench/detector_recall.py [--photos 20] [--faces 6] [--seed 0] [--size 1600x1200] [--tiles 90-400]

Each photo is a canvas (1600×1200 by default; a blurred, enlarged crop of another dataset photo as
background) with N real face photos from UTKFace and All-Age-Faces pasted at random sizes (90–400 px by
default) without overlap. A
placed face counts as found when one detected box has its centre inside the placed photo's central
region. Prints recall overall and by face size, and false detections per photo.
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

from ml.detection import FaceDetector  # noqa: E402
from ml.training.data import DATASETS_DIR, read_labels  # noqa: E402


def compose(samples, rng: random.Random, faces: int, size=(1600, 1200), tiles=(90, 400)):
    width, height = size
    background = (
        Image.open(rng.choice(samples).path).convert("RGB").resize(size).filter(ImageFilter.GaussianBlur(25))
    )
    placed: list[tuple[int, int, int, int]] = []
    attempts = 0
    while len(placed) < faces and attempts < 500:
        attempts += 1
        side = rng.randint(*tiles)
        x, y = rng.randint(0, width - side), rng.randint(0, height - side)
        box = (x, y, x + side, y + side)
        if any(not (box[2] < p[0] or box[0] > p[2] or box[3] < p[1] or box[1] > p[3]) for p in placed):
            continue
        tile = Image.open(rng.choice(samples).path).convert("RGB")
        tile = tile.crop(_square(tile)).resize((side, side), Image.Resampling.LANCZOS)
        background.paste(tile, box[:2])
        placed.append(box)
    return np.asarray(background), placed


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
    detector = FaceDetector()
    found_by_size: dict[str, list[bool]] = {band: [] for band in bands}
    false_alarms, seconds = 0, []
    for _ in range(args.photos):
        photo, placed = compose(samples, rng, args.faces, size, tiles)
        started = time.perf_counter()
        detections = detector.detect(photo)
        seconds.append(time.perf_counter() - started)
        centres = [((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2) for d in detections]
        matched = set()
        for x1, y1, x2, y2 in placed:
            margin = (x2 - x1) * 0.15
            hits = [
                i for i, (cx, cy) in enumerate(centres) if x1 + margin < cx < x2 - margin and y1 < cy < y2
            ]
            matched.update(hits)
            side = x2 - x1
            key = next((b for b in bands if side < int(b.split("-")[1])), bands[-1])
            found_by_size[key].append(bool(hits))
        false_alarms += len(detections) - len(matched)
    everything = [f for values in found_by_size.values() for f in values]
    print(f"photos: {args.photos} of {size[0]}x{size[1]}, {len(everything)} placed faces")
    print(f"recall: {np.mean(everything):.3f}")
    for key, values in found_by_size.items():
        if values:
            print(f"  faces {key} px: recall {np.mean(values):.3f} ({len(values)})")
    print(f"false detections per photo: {false_alarms / args.photos:.2f}")
    print(f"detector median seconds per photo: {np.median(seconds):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
