"""How often the detector's turned search helps and how often it invents a face, on training photos.

    python bench/turned_faces.py [--sample 150] [--seed 0]

Where MTCNN finds no face in a photo as it came, `ml.detection.FaceDetector` searches it again turned a
quarter turn each way and upside down (`TURNS`). Every photo in the training split of the shared datasets
is upright, so
- on those where no face is found as they came, any face found turned is a wrong guess at the photo's
  orientation ("invented");
- a sample of those where a face is found, turned sideways or upside down at random, stands for a phone
  photo whose orientation tag was lost: there the turned search should find the face ("sideways").
Prints, for several turned-confidence thresholds, the share of invented faces kept and of sideways faces
found, with and without the rule that a photo showing a weak face as it came (`FALLBACK_THRESHOLDS`)
needs the higher threshold. Detection over every training photo: about 8 minutes here. Not a test.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.detection import TURNED_MIN_CONFIDENCE, TURNS, FaceDetector  # noqa: E402
from ml.images import load_image  # noqa: E402
from ml.training.data import DATASETS_DIR, read_labels, split  # noqa: E402

BATCH = 16


def best_turned(detector: FaceDetector, rgb: np.ndarray) -> float:
    """The highest confidence of a face found in any turn of `rgb` (0 for none)."""
    turned = detector.detect_as_given([np.ascontiguousarray(np.rot90(rgb, k)) for k in TURNS])
    return max((d.confidence for faces in turned for d in faces), default=0.0)


def kept(rows: np.ndarray, threshold: float, weak_rule: bool) -> int:
    """How many of (confidence, weak face as it came) rows the turned search would take."""
    sure = rows[:, 0] >= threshold
    if weak_rule:
        sure |= (rows[:, 0] >= 0.9) & (rows[:, 1] == 0)
    return int(sure.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sample", type=int, default=150, help="photos with a face, per dataset, to turn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = [DATASETS_DIR / "aaf-train", DATASETS_DIR / "utkface"]
    if not all((f / "labels.csv").is_file() for f in folders):
        print(f"datasets not found under {DATASETS_DIR}", file=sys.stderr)
        return 2
    detector = FaceDetector()
    rng = random.Random(args.seed)
    invented, sideways = [], []  # (best turned confidence, shows a weak face as it came)
    for folder in folders:
        samples = split(read_labels(folder))[0]
        with_face = []
        for start in range(0, len(samples), BATCH):
            chunk = samples[start : start + BATCH]
            images = [np.asarray(load_image(s.path)) for s in chunk]
            for rgb, sample, faces in zip(images, chunk, detector.detect_as_given(images), strict=True):
                if faces:
                    with_face.append(sample)
                else:
                    invented.append((best_turned(detector, rgb), bool(detector.weak_faces(rgb))))
        for sample in rng.sample(with_face, min(args.sample, len(with_face))):
            rgb = np.ascontiguousarray(np.rot90(np.asarray(load_image(sample.path)), rng.choice(TURNS)))
            if detector.detect_as_given([rgb])[0]:
                continue  # found as it came: the turned search would not run
            sideways.append((best_turned(detector, rgb), bool(detector.weak_faces(rgb))))
        print(
            f"{folder.name}: {len(samples)} training photos, {len(samples) - len(with_face)} without a face"
        )
    inv, side = np.array(invented), np.array(sideways)
    print(f"invented: {int((inv[:, 0] >= 0.9).sum())} of {len(inv)} photos without a face show one turned")
    print(f"sideways: {len(side)} turned photos where no face was found as they came")
    print("| turned face needs | invented kept | sideways found |")
    print("| --- | ---: | ---: |")
    for threshold in (0.9, 0.95, 0.98, TURNED_MIN_CONFIDENCE, 0.995):
        for weak_rule in (False, True):
            label = f"≥ {threshold}" + (", or ≥ 0.9 with no weak face as it came" if weak_rule else "")
            counts = kept(inv, threshold, weak_rule), kept(side, threshold, weak_rule)
            print(f"| {label} | {counts[0]} | {counts[1]} of {len(side)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
