"""`python -m ml train` end to end on a tiny labelled folder: chips, fit, artifact, reload, resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from ml.artifact import sha256

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, astronaut) -> Path:
    """24 real portraits (the astronaut, varied in framing and light) with made-up labels."""
    folder = tmp_path_factory.mktemp("tiny") / "tinyset"
    folder.mkdir()
    portrait = Image.fromarray(astronaut).crop((100, 0, 400, 330))
    rows = []
    for i in range(24):
        image = portrait.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else portrait
        image = ImageEnhance.Brightness(image).enhance(0.7 + 0.05 * (i % 12))
        image = image.resize((200 + 8 * (i % 5), 220 + 8 * (i % 5)))
        name = f"face{i:02d}.jpg"
        image.save(folder / name, quality=90)
        rows.append({"file": name, "age": 20 + 2 * i, "gender": "female" if i % 3 else "male"})
    with (folder / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "age", "gender"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def train(folder: Path, out: Path, epochs: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ml", "train", "--data", str(folder), "--out", str(out)]
    command += ["--cache-dir", str(out.parent / "cache"), "--epochs", str(epochs), "--batch-size", "8"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_train_writes_a_loadable_artifact_and_resumes(tiny_folder, tmp_path, astronaut):
    out = tmp_path / "run"
    first = train(tiny_folder, out, epochs=1)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "epoch 1/1" in first.stdout

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sha256"] == sha256(out / "model.keras")
    assert manifest["input_size"] == 64 and manifest["training_data"]["tinyset"]["validation"] >= 1
    assert 0 < manifest["interval"]["scale"] < 10
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["count"] == manifest["training_data"]["tinyset"]["validation"]
    assert (out.parent / "cache" / "tinyset-64.npz").is_file()

    from ml import Predictor

    faces = Predictor.load(out).predict(np.ascontiguousarray(astronaut))
    assert len(faces) == 1 and faces[0].gender in ("female", "male")


def test_an_interrupted_run_resumes_from_its_last_epoch(tiny_folder, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ml", "train", "--data", str(tiny_folder), "--out", str(out)]
    command += ["--cache-dir", str(tmp_path / "cache"), "--epochs", "3", "--batch-size", "8"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    try:
        for line in process.stdout:
            if line.startswith("epoch 1/3"):
                break
    finally:
        process.kill()  # as if the machine went down after the first epoch
        process.wait()
    assert not (out / "model.keras").exists()

    resumed = train(tiny_folder, out, epochs=3)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "epoch 2/3" in resumed.stdout and "epoch 1/3" not in resumed.stdout
    assert (out / "model.keras").is_file()


def test_train_refuses_a_folder_without_labels(tmp_path):
    result = train(tmp_path, tmp_path / "run", epochs=1)
    assert result.returncode == 2
    assert "labels.csv" in result.stderr
