"""Labelled face folders (`labels.csv` with `file,age,gender`) and the fixed validation split."""

from __future__ import annotations

import csv
import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

#: Where the shared datasets live unless `AGEGENDER_DATASETS` says otherwise: `shared/datasets` beside
#: the repository, found from the `ml` package (not from the folder a command is run in).
REPO_DIR = Path(__file__).resolve().parents[2]
DATASETS_DIR = Path(os.environ.get("AGEGENDER_DATASETS") or REPO_DIR.parent / "shared" / "datasets")

#: Age buckets used for stratification and for per-bucket metrics (inclusive bounds).
AGE_BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("0-2", 0, 2),
    ("3-12", 3, 12),
    ("13-19", 13, 19),
    ("20-29", 20, 29),
    ("30-39", 30, 39),
    ("40-49", 40, 49),
    ("50-59", 50, 59),
    ("60-69", 60, 69),
    ("70+", 70, 10_000),
)

VALIDATION_SHARE = 0.12
SPLIT_SEED = "agegender-split-v1"


@dataclass(frozen=True)
class Sample:
    path: Path
    age: int
    gender: str  # "female" | "male"
    dataset: str  # folder name, e.g. "utkface"

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.path.name}"


def age_bucket(age: float) -> str:
    for name, low, high in AGE_BUCKETS:
        if low <= round(age) <= high:
            return name
    return AGE_BUCKETS[-1][0]


def read_labels(folder: str | Path) -> list[Sample]:
    """Read `folder/labels.csv`; rows whose file is missing or whose labels are malformed are skipped."""
    folder = Path(folder)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels} not found: a data folder needs labels.csv with file,age,gender")
    samples = []
    with labels.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                age = int(float(row["age"]))
                gender = row["gender"].strip().lower()
            except (KeyError, TypeError, ValueError):
                continue
            if gender not in ("female", "male") or not 0 <= age <= 120:
                continue
            path = folder / row["file"]
            if path.is_file():
                samples.append(Sample(path=path, age=age, gender=gender, dataset=folder.name))
    return samples


def _rank(sample: Sample) -> str:
    return hashlib.sha256(f"{SPLIT_SEED}:{sample.key}".encode()).hexdigest()


def split(samples: list[Sample], share: float = VALIDATION_SHARE) -> tuple[list[Sample], list[Sample]]:
    """Deterministic train/validation split, stratified by dataset and age bucket.

    Within each (dataset, bucket) stratum, samples are ordered by a hash of their key and the first
    `share` of them go to validation. The assignment of a file never depends on which other files are
    present, apart from its stratum, so adding a new folder does not reshuffle the old ones.
    """
    strata: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in samples:
        strata[(sample.dataset, age_bucket(sample.age))].append(sample)
    train, val = [], []
    for members in strata.values():
        members.sort(key=_rank)
        n_val = round(len(members) * share)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return train, val
