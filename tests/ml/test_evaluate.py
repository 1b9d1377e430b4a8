"""Evaluation: the metric arithmetic on known numbers, the subset choice, and a real run via the peer."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ml.training.data import DATASETS_DIR, Sample, age_bucket, read_labels, split
from ml.training.evaluate import main, select_samples, spread_subset
from ml.training.scoring import Record, age_mae, cs_at, format_report, summarize


def record(
    age: int,
    predicted: float | None,
    gender: str = "female",
    predicted_gender: str | None = "female",
    low: float | None = None,
    high: float | None = None,
    detected: bool = True,
    seconds: float = 0.1,
) -> Record:
    return Record(
        key=f"set/{age}-{predicted}",
        dataset="set",
        age=age,
        gender=gender,
        predicted_age=predicted,
        predicted_gender=None if predicted is None else predicted_gender,
        age_low=None if predicted is None else (predicted - 5 if low is None else low),
        age_high=None if predicted is None else (predicted + 5 if high is None else high),
        detected=detected,
        seconds=seconds,
    )


def test_mae_and_cs5_on_known_errors() -> None:
    errors = [0.0, -5.0, 5.5, 10.0, -2.5]
    assert age_mae(errors) == pytest.approx(23.0 / 5)
    assert cs_at(errors) == pytest.approx(3 / 5)  # 0, -5 (on the edge) and -2.5
    assert age_mae([]) is None and cs_at([]) is None


def test_summary_figures_and_per_bucket_breakdown() -> None:
    records = [
        record(25, 27.0),  # 20-29, err 2, right gender
        record(28, 20.0, predicted_gender="male"),  # 20-29, err 8, wrong gender
        record(1, 2.0, low=1.5, high=3.0, detected=False),  # 0-2, err 1, interval misses
        record(75, 69.0, gender="male", predicted_gender="male", seconds=0.5),  # 70+, err 6
        record(40, None, detected=False, seconds=0.3),  # unanswered
    ]
    summary = summarize(records)
    assert summary["images"] == 5 and summary["answered"] == 4
    assert summary["age_mae"] == pytest.approx((2 + 8 + 1 + 6) / 4)
    assert summary["cs5"] == pytest.approx(2 / 4)
    assert summary["gender_accuracy"] == pytest.approx(3 / 4)
    assert summary["no_face_share"] == pytest.approx(2 / 5)
    # 27±5 holds 25; 20±5 misses 28, [1.5, 3] misses 1, 69±5 misses 75.
    assert summary["interval_coverage"] == pytest.approx(1 / 4)
    assert summary["interval_width"] == pytest.approx((10 + 10 + 1.5 + 10) / 4, abs=0.01)
    assert summary["seconds_per_image"] == pytest.approx(1.1 / 5)
    buckets = summary["buckets"]
    assert buckets["20-29"] == {"count": 2, "age_mae": 5.0, "gender_accuracy": 0.5}
    assert buckets["0-2"] == {"count": 1, "age_mae": 1.0, "gender_accuracy": 1.0}
    assert buckets["70+"] == {"count": 1, "age_mae": 6.0, "gender_accuracy": 1.0}
    assert buckets["30-39"] == {"count": 0, "age_mae": None, "gender_accuracy": None}
    assert buckets["40-49"]["count"] == 0  # an unanswered image is not scored in its bucket


def test_report_puts_models_side_by_side() -> None:
    summary = summarize([record(25, 27.0), record(60, 50.0)])
    result = {"model_version": "v", "datasets": {"set": summary}}
    report = format_report({"ours": result, "peer": result})
    assert "| metric | ours | peer |" in report
    assert "| age MAE (years) | 6.00 | 6.00 |" in report
    assert "| 60-69 | 1 | 10.00 | 10.00 | 1.000 | 1.000 |" in report


def samples_of(ages: list[int], dataset: str) -> list[Sample]:
    return [
        Sample(path=Path(f"{dataset}/{i}.jpg"), age=a, gender="male", dataset=dataset)
        for i, a in enumerate(ages)
    ]


def test_limit_takes_a_deterministic_bucket_spread_subset_per_dataset() -> None:
    young, old = samples_of([5] * 50 + [70] * 50, "a"), samples_of([30] * 10, "b")
    chosen = spread_subset(young + old, limit=10)
    assert set(spread_subset(list(reversed(young + old)), limit=10)) == set(chosen)
    assert sum(s.dataset == "a" for s in chosen) == 10 and sum(s.dataset == "b" for s in chosen) == 10
    assert sorted(age_bucket(s.age) for s in chosen if s.dataset == "a") == ["3-12"] * 5 + ["70+"] * 5
    assert len(spread_subset(young, limit=None)) == 100


@pytest.fixture()
def astronaut_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "astronauts"
    folder.mkdir()
    image = data.astronaut()
    Image.fromarray(image).save(folder / "a.jpg", quality=92)
    Image.fromarray(image[40:260, 120:330]).save(folder / "crop.png")  # a tight crop: face still found
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(folder / "blank.png")  # no face: fallback
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "labels.csv").write_text(
        "file,age,gender\na.jpg,41,female\ncrop.png,41,female\nblank.png,30,male\nbroken.jpg,20,male\n"
    )
    return folder


def test_evaluates_a_labelled_folder_end_to_end_with_the_peer(astronaut_folder: Path, tmp_path: Path) -> None:
    out, rows = tmp_path / "figures.json", tmp_path / "records.csv"
    args = ["--data", str(astronaut_folder), "--peer-only", "--json", str(out), "--records", str(rows)]
    assert main(args) == 0
    payload = json.loads(out.read_text())
    assert payload["splits"] == {"astronauts": "all"}
    figures = payload["results"]["peer"]["datasets"]["astronauts"]
    assert figures["images"] == 4 and figures["answered"] == 3 and figures["errors"] == 1
    assert figures["no_face_share"] == pytest.approx(0.5)  # the blank image (fallback) and the broken file
    assert 0 <= figures["age_mae"] <= 30 and figures["seconds_per_image"] > 0
    assert figures["buckets"]["40-49"]["count"] == 2 and figures["buckets"]["40-49"]["gender_accuracy"] == 1.0
    with rows.open() as handle:
        records = list(csv.DictReader(handle))
    assert [r["model"] for r in records] == ["peer"] * 4
    assert sum(1 for r in records if r["error"]) == 1
    assert sum(1 for r in records if r["detected"] == "True") == 2
    assert sum(1 for r in records if r["predicted_gender"] == r["gender"]) == round(
        figures["gender_accuracy"] * figures["answered"]
    )


def test_missing_labels_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path), "--peer-only"]) == 2
    assert "labels.csv" in capsys.readouterr().err


@pytest.mark.skipif(
    not (DATASETS_DIR / "aaf-train").is_dir(),
    reason=f"needs {DATASETS_DIR / 'aaf-train'} (or set AGEGENDER_DATASETS)",
)
def test_shared_datasets_default_to_their_validation_split() -> None:
    folder = DATASETS_DIR / "aaf-train"
    samples, splits = select_samples([folder], None)
    assert splits == {"aaf-train": "val"}
    assert {s.key for s in samples} == {s.key for s in split(read_labels(folder))[1]}
    everything, _ = select_samples([folder], "all")
    assert len(everything) > len(samples)


def test_signed_error_per_age_group_says_which_way_each_group_is_wrong() -> None:
    records = [record(5, 9.0), record(7, 10.0), record(25, 23.0), record(25, 24.0), record(50, None)]
    groups = summarize(records)["groups"]
    assert groups["3-9"] == {"count": 2, "age_mae": 3.5, "signed_error": 3.5, "gender_accuracy": 1.0}
    assert groups["20-29"]["signed_error"] == pytest.approx(-1.5) and groups["20-29"]["age_mae"] == 1.5
    assert groups["45+"]["count"] == 0 and groups["45+"]["signed_error"] is None
    report = format_report({"ours": {"model_version": "x", "datasets": {"set": summarize(records)}}})
    assert "| 3-9 | 2 | +3.50 | 3.50 | 1.000 |" in report


def test_scanned_and_cut_photos_through_the_peer(astronaut_folder: Path, tmp_path: Path) -> None:
    """`--degrade`: every photo spoilt the same way for every model and run, then read end to end."""
    from ml.training.scans import spoiled_photo

    photo = next(p for p in sorted(astronaut_folder.iterdir()) if p.suffix == ".jpg")
    scanned = spoiled_photo(photo, "scan", "k")
    assert scanned == spoiled_photo(photo, "scan", "k") and scanned != spoiled_photo(photo, "scan", "j")
    with Image.open(photo) as whole, Image.open(io.BytesIO(spoiled_photo(photo, "cut", "k"))) as cut:
        assert cut.size != whole.size and (cut.width == whole.width or cut.height == whole.height)
    out = tmp_path / "figures.json"
    args = ["--data", str(astronaut_folder), "--peer-only", "--degrade", "scan", "--json", str(out)]
    assert main(args) == 0
    payload = json.loads(out.read_text())
    assert payload["degrade"] == "scan"
    figures = payload["results"]["peer"]["datasets"]["astronauts"]
    assert figures["images"] == 4 and figures["errors"] == 1  # the broken file is still refused
    assert figures["groups"]["30-44"]["count"] + figures["groups"]["45+"]["count"] >= 1
