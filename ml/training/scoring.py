"""The figures of an evaluation: per-image records, their summary per dataset, age bucket and age group,
and the markdown report that puts models side by side (`ml.training.evaluate` runs the predictors)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.training.data import AGE_BUCKETS, age_bucket

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
