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


def command(folder: Path, out: Path, epochs: int) -> list[str]:
    """The default (fused) configuration, every stage cut to one epoch except the last one's `epochs`."""
    args = [sys.executable, "-m", "ml", "train", "--data", str(folder), "--out", str(out)]
    args += ["--cache-dir", str(out.parent / "cache"), "--epochs", str(epochs), "--batch-size", "8"]
    return args + ["--trunk-epochs", "1", "--head-epochs", "1", "--polish-epochs", "1"]


def train(folder: Path, out: Path, epochs: int) -> subprocess.CompletedProcess:
    return subprocess.run(command(folder, out, epochs), capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_train_writes_a_loadable_artifact_and_resumes(tiny_folder, tmp_path, astronaut):
    out = tmp_path / "run"
    first = train(tiny_folder, out, epochs=1)
    assert first.returncode == 0, first.stderr[-2000:]
    # stage 1 (the trunk alone), the heads' warm-up, then the fused model on two schedules
    assert "stage 1 of 2" in first.stdout and "heads 1/1" in first.stdout
    assert first.stdout.count("epoch 1/1") == 2 and "polish 1/1" in first.stdout
    assert (out / "finetuned.weights.h5").is_file()
    trunk = json.loads((out / "trunk" / "manifest.json").read_text())
    assert trunk["name"] == "agegender-resnet" and list(trunk["inputs"]) == ["image"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sha256"] == sha256(out / "model.keras")
    assert manifest["input_size"] == 64 and manifest["training_data"]["tinyset"]["validation"] >= 1
    assert manifest["name"] == "agegender-fused"
    assert manifest["inputs"] == {
        "face": {"geometry": "face", "size": 64},
        "image": {"geometry": "chip", "size": 64},
    }
    assert 0 < manifest["interval"]["scale"] < 10
    # the range's widening for faces small in the photo, fitted on training faces made small
    from ml.training.calibration import SMALL_FACE_EYES

    small = manifest["interval"]["small_faces"]
    assert small["eye_px"] == list(SMALL_FACE_EYES) and small["native_eye_px"] == pytest.approx(23.14, 0.01)
    assert all(f >= 1.0 for f in small["factor"]) and small["factor"] == sorted(small["factor"], reverse=True)
    assert "small faces: range widened by" in first.stdout
    # and for blurred faces, by the face chip's sharpness, fitted on training faces blurred
    blurred = manifest["interval"]["blurred_faces"]
    assert blurred["input"] == "face" and blurred["sharpness"] == sorted(blurred["sharpness"])
    assert all(s < blurred["native_sharpness"] for s in blurred["sharpness"])
    assert all(f >= 1.0 for f in blurred["factor"]) and blurred["factor"] == sorted(
        blurred["factor"], reverse=True
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["count"] == manifest["training_data"]["tinyset"]["validation"]
    assert (out.parent / "cache" / "tinyset-64.npz").is_file()
    # last step: the untouched Cydral gender network blended in, its weight fitted on held-out faces
    from ml.training.finishing import EXPERT_WEIGHTS

    expert = metrics["gender_expert"]
    assert expert["weight"] in EXPERT_WEIGHTS and expert["fitted_on_faces"] >= 1
    assert metrics["fitted_on"] == {"interval_scale": "validation", "gender_expert": "training"}
    assert manifest["training_data"]["tinyset"]["calibration"] == 0
    assert f"gender expert: weight {expert['weight']}" in first.stdout

    from ml import Predictor

    faces = Predictor.load(out).predict(np.ascontiguousarray(astronaut))
    assert len(faces) == 1 and faces[0].gender in ("female", "male")

    # a finished model (expert included) starts a new run; with no epochs only the final steps run,
    # here with faces held out for calibration: then nothing is fitted on validation faces
    again = out.parent / "again"
    args = command(tiny_folder, again, 0) + ["--init-from", str(out), "--calibration-share", "0.2"]
    finishing = subprocess.run(
        args + ["--polish-epochs", "0"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert finishing.returncode == 0, finishing.stderr[-2000:]
    assert "stage 1 of 2" not in finishing.stdout and "epoch 1/" not in finishing.stdout
    assert "polish 1/" not in finishing.stdout
    remetrics = json.loads((again / "metrics.json").read_text())
    assert remetrics["fitted_on"] == {"interval_scale": "calibration", "gender_expert": "calibration"}
    calibration = json.loads((again / "manifest.json").read_text())["training_data"]["tinyset"]
    assert (
        calibration["calibration"] >= 1
        and calibration["train"] < manifest["training_data"]["tinyset"]["train"]
    )
    assert remetrics["gender_expert"]["fitted_on_faces"] == calibration["calibration"]
    refaces = Predictor.load(again).predict(np.ascontiguousarray(astronaut))
    assert abs(refaces[0].age - faces[0].age) < 0.5  # same weights: the age does not move

    # a finished model's small-face widening fitted again: only the manifest changes
    before = json.loads((again / "manifest.json").read_text())
    refit = subprocess.run(
        [sys.executable, "-m", "ml", "small-faces", str(again), "--data", str(tiny_folder)]
        + ["--cache-dir", str(out.parent / "cache"), "--version", "9.9.9"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert refit.returncode == 0, refit.stderr[-2000:]
    after = json.loads((again / "manifest.json").read_text())
    assert after["sha256"] == before["sha256"] == sha256(again / "model.keras")
    assert after["version"] == "9.9.9" and after["interval"]["small_faces"]["eye_px"] == list(SMALL_FACE_EYES)
    assert after["interval"]["blurred_faces"]["input"] == "face"
    assert after["interval"]["scale"] == before["interval"]["scale"]


def test_an_interrupted_run_resumes_from_its_last_epoch(tiny_folder, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        command(tiny_folder, out, 3), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
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
    assert "stage 1 of 2" not in resumed.stdout and "heads warmed up earlier" in resumed.stdout
    assert "polish 1/1" in resumed.stdout and (out / "model.keras").is_file()

    # a rerun after the first schedule finished starts at the second, without fitting the first again
    Path(out / "model.keras").unlink()
    again = train(tiny_folder, out, epochs=3)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "epoch stage done earlier" in again.stdout and "epoch 1/3" not in again.stdout
    assert (out / "model.keras").is_file()


def test_train_refuses_a_folder_without_labels(tmp_path):
    result = train(tmp_path, tmp_path / "run", epochs=1)
    assert result.returncode == 2
    assert "labels.csv" in result.stderr


def test_a_run_over_its_budget_still_ends_every_stage_with_an_artifact(tiny_folder, tmp_path):
    """`--max-minutes` is the whole run's: each stage (trunk, fine-tuning, polish) gets a share and stops
    after the epoch that passes it, and the run still ends with a loadable model."""
    out = tmp_path / "run"
    args = command(tiny_folder, out, epochs=4)
    args[args.index("--trunk-epochs") + 1] = "4"
    args[args.index("--polish-epochs") + 1] = "4"
    result = subprocess.run(
        [*args, "--max-minutes", "0.005"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    for label in ("epoch", "polish"):  # the trunk's lines and the fine-tuning's both say "epoch"
        assert sum(line.startswith(f"{label} 1/4") for line in lines) == (2 if label == "epoch" else 1)
        assert not any(line.startswith(f"{label} 2/4") for line in lines), result.stdout
    assert (out / "model.keras").is_file() and (out / "trunk" / "model.keras").is_file()
    # the trunk's share is by its work (4 epochs at 0.6 of a fused one, against 1 + 4 + 4 fused epochs),
    # and each later stage gets a share of what the stages before it left, never the whole budget again
    words = [line.split() for line in lines if line.startswith("time budget: ")]
    budgets = [w for w in words if w[2] in ("trunk", "epoch", "polish")]  # not the per-epoch forecast
    trunk = next(b for b in budgets if b[2] == "trunk")
    assert float(trunk[3][:-1]) == pytest.approx(0.3 * 2.4 / 11.4, abs=1e-3)
    assert float(trunk[5][:-1]) == pytest.approx(0.3, abs=1e-3)
    fused = [b for b in budgets if b[2] in ("epoch", "polish")]
    assert [b[2] for b in fused] == ["epoch", "polish"]
    assert all(float(b[5][:-1]) < 0.3 - float(trunk[3][:-1]) for b in fused)


def _constant_judge(p_male: float):
    """A stand-in for our model that gives every face P(male) = `p_male` (and a flat age)."""
    import keras

    from ml.model import AGE_CLASSES

    image = keras.Input((64, 64, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(image)
    age = keras.layers.Dense(AGE_CLASSES, activation="softmax", kernel_initializer="zeros", name="age")(
        pooled
    )
    logit = float(np.log(p_male / (1 - p_male)))
    gender = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(logit),
        name="gender",
    )(pooled)
    return keras.Model(image, {"age": age, "gender": gender})


def test_labels_both_networks_contradict_are_doubted_and_listed(tiny_folder, tmp_path):
    """The real Cydral gender network on the real chips: it takes the astronaut for a woman, so with a
    judge of ours that agrees (P(male) 0.1) exactly the faces labelled male are doubted."""
    from ml.training.chipsets import load_chips
    from ml.training.config import TrainConfig
    from ml.training.stages import doubt_labels, local_site

    chips = load_chips([str(tiny_folder)], 64, str(tmp_path / "cache"), faces=True)
    config = TrainConfig(out=str(tmp_path), gender_doubt=0.5)
    doubted = doubt_labels(_constant_judge(0.1), chips, config, local_site())
    assert doubted.tolist() == (chips.males == 1).tolist() and doubted.sum() == 8
    with (tmp_path / "gender_doubts.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["key"] for row in rows] == chips.keys[doubted].tolist()
    assert all(row["label"] == "male" and float(row["p_male_cydral"]) <= 0.5 for row in rows)
    assert all(float(row["p_male_ours"]) == pytest.approx(0.1, abs=1e-3) for row in rows)
    # our judge at P(male) 0.1 is not sure enough for a threshold of 0.95
    strict = doubt_labels(
        _constant_judge(0.1), chips, TrainConfig(out=str(tmp_path), gender_doubt=0.95), local_site()
    )
    assert not strict.any()


def test_teachers_outputs_are_averaged_soft_targets_kept_beside_the_labels(tiny_folder, tmp_path):
    """The real shipped model as teacher on the real astronaut chips: its served outputs become each
    face's soft targets, next to the labels in the training targets, and are cached per run."""
    from ml.training.chipsets import load_chips, teacher_targets
    from ml.training.feeding import training_targets

    chips = load_chips([str(tiny_folder)], 64, str(tmp_path / "cache"), faces=True)
    assert chips.soft_ages is None and set(training_targets(chips)) == {"age", "gender"}
    cache = tmp_path / "teachers.npz"
    taught = teacher_targets([ROOT / "ml/models/default"], chips, cache)
    assert taught.soft_ages.shape == (24, 101) and np.allclose(taught.soft_ages.sum(axis=1), 1, atol=1e-4)
    assert np.all(taught.soft_males < 0.5)  # the astronaut is a woman, whatever the made-up labels say
    expected = (taught.soft_ages * np.arange(101)).sum(axis=1)
    assert np.all((expected > 20) & (expected < 65))
    twice = teacher_targets([ROOT / "ml/models/default"] * 2, chips)  # two teachers: their mean
    assert np.allclose(twice.soft_ages, taught.soft_ages, atol=1e-5)
    written = cache.stat().st_mtime_ns
    cached = teacher_targets([ROOT / "ml/models/default"], chips, cache)  # read back, not recomputed
    assert np.array_equal(cached.soft_males, taught.soft_males) and cache.stat().st_mtime_ns == written
    with pytest.raises(FileNotFoundError):  # other teachers: not the cached targets
        teacher_targets(["no/such/model"], chips, cache)
    targets = training_targets(taught.take(np.arange(3)))
    assert targets["age"].shape == (3, 102) and np.array_equal(targets["age"][:, 0], chips.ages[:3])
    assert np.array_equal(targets["gender"][:, 0], chips.males[:3])
    assert np.array_equal(targets["gender"][:, 1], taught.soft_males[:3])
