"""`python -m ml.training.remote`: training split by machine (pack here, fit there, finish here) on real
portraits."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from ml.training import remote
from tests.ml.test_train import ROOT, tiny_folder  # noqa: F401  (the fixture)


def test_chips_survive_the_trip(astronaut):
    chips = np.stack([astronaut[100:164, 180:244], astronaut[0:64, 0:64]])
    blob, offsets = remote.encode_chips(chips)
    assert len(offsets) == 3 and offsets[-1] == len(blob) < chips.nbytes / 4
    decoded = remote.decode_chips(blob, offsets)
    assert decoded.shape == chips.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(float) - chips).mean() < 6


def test_weights_split_into_parts_and_back(tmp_path, monkeypatch):
    from ml.model import make_model

    model = make_model(64, (8, 16), (1, 1))
    monkeypatch.setattr(remote, "PART_BYTES", 20_000)
    paths = remote.save_weights(model, tmp_path)
    assert len(paths) > 2
    for path in paths:  # a part holds one weight larger than the limit, or weights within it
        with np.load(path) as part:
            sizes = [part[key].nbytes for key in part.files]
        assert len(sizes) == 1 or sum(sizes) <= 20_000
    copy = make_model(64, (8, 16), (1, 1))
    remote.load_weights(copy, tmp_path)
    for ours, theirs in zip(model.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def run(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ml.training.remote", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_pack_fit_finish(tiny_folder, tmp_path):  # noqa: F811
    options = ["--cache-dir", tmp_path / "cache", "--batch-size", 8, "--calibration-share", 0.25]
    options += ["--trunk-epochs", 1, "--head-epochs", 1, "--epochs", 1, "--polish-epochs", 1]
    packed, weights, out = tmp_path / "packed", tmp_path / "weights", tmp_path / "final"

    step = run("pack", packed, "--data", tiny_folder, *options)
    assert step.returncode == 0, step.stderr[-2000:]
    faces = json.loads((packed / "pack.json").read_text())["faces"]
    assert {p.name for p in packed.iterdir()} >= {"train.npz", "cydral_age.json", "cydral_age.npz"}

    # the fit reads nothing but the packed folder: the datasets and the chip cache are not there
    absent = ["--data", tmp_path / "elsewhere" / tiny_folder.name, "--cache-dir", tmp_path / "none"]
    step = run("fit", packed, weights, "--out", tmp_path / "work", *options, *absent)
    assert step.returncode == 0, step.stderr[-2000:]
    assert "stage 1 of 2" in step.stdout and "polish 1/1" in step.stdout
    fitted = json.loads((weights / "fit.json").read_text())
    assert sum(fitted["faces"].values()) == faces and fitted["faces"]["calibration"] >= 1

    step = run("finish", weights, "--out", out, "--data", tiny_folder, *options)
    assert step.returncode == 0, step.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training_data"]["tinyset"]["calibration"] == fitted["faces"]["calibration"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fitted_on"] == {"interval_scale": "calibration", "gender_expert": "calibration"}

    # a different hold-out here than there is refused rather than fitted on training faces
    other = ["--out", tmp_path / "other", "--data", tiny_folder, *options[:-8], "--seed", 7]
    step = run("finish", weights, *other)
    assert step.returncode != 0 and "calibration faces" in step.stderr
