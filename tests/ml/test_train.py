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
    from ml.calibration import SMALL_FACE_EYES

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
    from ml.train import EXPERT_WEIGHTS

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


def test_pretrained_parts_can_learn_more_slowly():
    """`--polish-pretrained-lr-scale`: the optimizer's steps for the given variables shrink by that factor."""
    import keras

    from ml.train import scaled_adamw

    slow, fast = keras.layers.Dense(4, name="slow"), keras.layers.Dense(1, name="fast")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, fast(slow(inputs)))
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    model.compile(optimizer=scaled_adamw(1e-2, 0.0, slow.weights, 0.1), loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.random((64, 3)), rng.random((64, 1)), batch_size=64, epochs=1, verbose=0)
    moved = {v.path: float(np.abs(v.numpy() - before[v.path]).max()) for v in model.trainable_variables}
    # Adam's first step moves every weight by about the learning rate, whatever its gradient
    assert all(9e-3 < moved[name] < 1.1e-2 for name in moved if name.startswith("fast"))
    assert all(9e-4 < moved[name] < 1.1e-3 for name in moved if name.startswith("slow"))


def _portraits(folder: Path, astronaut, faces) -> Path:
    """A labelled folder of the astronaut's portrait, one photo `face<i>.jpg` per (brightness, size or
    None, age, gender)."""
    folder.mkdir()
    portrait = Image.fromarray(astronaut).crop((100, 0, 400, 330))
    with (folder / "labels.csv").open("w") as handle:
        handle.write("file,age,gender\n")
        for i, (light, size, age, gender) in enumerate(faces):
            image = ImageEnhance.Brightness(portrait).enhance(light)
            (image.resize(size) if size else image).save(folder / f"face{i}.jpg", quality=90)
            handle.write(f"face{i}.jpg,{age},{gender}\n")
    return folder


def test_training_chips_are_the_chips_the_service_makes(tmp_path, engine, astronaut):
    """The cache holds, for every face, both of the model's inputs exactly as `Predictor.chips_of` cuts
    them from the photo: not resampled from another chip (the skew of pipeline v4: 3-4 grey levels),
    and from the landmarks the detector finds for the photo alone (up to v5 the cache detected photos
    in batches, which moved landmarks by up to 10 px). The photos differ in size, as the datasets' do."""
    from ml.images import load_image
    from ml.train import load_chips

    folder = _portraits(
        tmp_path / "same",
        astronaut,
        [(0.8 + 0.2 * i, (240 + 7 * i, 264 + 5 * i), 30 + i, "female") for i in range(3)],
    )
    cached = load_chips([str(folder)], 64, str(tmp_path / "cache"), faces=True)
    assert cached.faces.shape == (3, 64, 64, 3) and cached.detected.all()
    for i, key in enumerate(cached.keys):
        photo = np.asarray(load_image(folder / key.split("/")[1]))
        (found,) = engine.detector.detect(photo)
        served = engine.chips_of(photo, found.landmarks)
        for name, chips in (("image", cached.chips), ("face", cached.faces)):
            assert np.array_equal(chips[i], served[name][0]), (name, key)
    # the landmarks they were cut from are kept, so that they can be cut again without the detector
    from ml.chips import build_cache

    with np.load(build_cache(folder, 64, tmp_path / "cache")) as data:
        photos = [np.asarray(load_image(folder / name)) for name in data["files"]]
        found = [np.asarray(engine.detector.detect(photo)[0].landmarks) for photo in photos]
        np.testing.assert_allclose(np.stack(found), data["landmarks"], atol=1e-4)


def test_resampled_chips_are_the_same_faces_cut_another_way_and_mixed_in_by_share(tmp_path, astronaut):
    """`--resampled-share`: besides the served chips, each face cut the way of pipeline v4 (a larger warp
    shrunk with Lanczos; the face framing re-cut from it) from the cache's landmarks; training draws
    those for a share of the faces, validation never."""
    from dataclasses import replace

    from ml.alignment import align
    from ml.train import TrainConfig, _inputs, load_chips, split_chips

    faces = [(0.6 + 0.02 * i, None, 20 + i, "male" if i % 2 else "female") for i in range(40)]
    folder = _portraits(tmp_path / "lit", astronaut, faces)
    chips = load_chips([str(folder)], 64, str(tmp_path / "cache"), faces=True, resampled=True)
    assert chips.resampled.shape == chips.chips.shape and chips.resampled_faces.shape == chips.faces.shape

    def sharpness(images):  # mean squared Laplacian
        grey = images.astype(np.float32).mean(-1)
        return float(
            np.mean(
                (
                    4 * grey[:, 1:-1, 1:-1]
                    - grey[:, :-2, 1:-1]
                    - grey[:, 2:, 1:-1]
                    - grey[:, 1:-1, :-2]
                    - grey[:, 1:-1, 2:]
                )
                ** 2
            )
        )

    for served, other in ((chips.chips, chips.resampled), (chips.faces, chips.resampled_faces)):
        gap = np.abs(served.astype(np.float32) - other).mean()
        assert 0.5 < gap < 12, gap  # the same face in the same place, cut another way
    assert sharpness(chips.resampled) > 1.1 * sharpness(chips.chips)  # Lanczos from a larger warp
    assert sharpness(chips.resampled_faces) < 0.9 * sharpness(chips.faces)  # re-cut and enlarged
    rgb = np.asarray(Image.open(folder / "face0.jpg").convert("RGB"))
    with np.load(tmp_path / "cache" / "lit-64.npz") as data:
        points = data["landmarks"][list(data["files"]).index("face0.jpg")]
    index = list(chips.keys).index("lit/face0.jpg")
    assert np.array_equal(chips.chips[index], align(rgb, points, 64))

    train_set, val_set = split_chips(chips)
    weights = np.ones(len(train_set.ages), np.float32)
    for share, expected in ((0.0, (1.0, 0.0)), (1.0, (0.0, 1.0)), (0.5, None)):
        config = TrainConfig(batch_size=len(train_set.ages), resampled_share=share)
        data, validation = _inputs(train_set, val_set, weights, config, seed=3)
        x, y, _ = next(iter(data))
        assert np.array_equal(np.concatenate([b[0]["image"] for b in validation]), val_set.chips)
        order = [int(np.flatnonzero(train_set.ages == age)[0]) for age in np.asarray(y["age"])]
        image, face = np.asarray(x["image"]), np.asarray(x["face"])
        served = np.array([np.array_equal(image[k], train_set.chips[i]) for k, i in enumerate(order)])
        other = np.array([np.array_equal(image[k], train_set.resampled[i]) for k, i in enumerate(order)])
        faces_match = [
            np.array_equal(face[k], (train_set.faces if s else train_set.resampled_faces)[i])
            for k, (i, s) in enumerate(zip(order, served, strict=True))
        ]
        assert all(faces_match) and (served | other).all() and set(x) == {"image", "face"}
        if expected:
            assert (served.mean(), other.mean()) == expected
        else:
            assert 0.2 < other.mean() < 0.8
    # asked for where there are none (a GPU machine's pack): an error, not served chips in silence
    with pytest.raises(ValueError, match="resampled"):
        bare = replace(train_set, resampled=None, resampled_faces=None)
        _inputs(bare, val_set, weights, TrainConfig(resampled_share=0.5), seed=3)


def test_train_refuses_a_folder_without_labels(tmp_path):
    result = train(tmp_path, tmp_path / "run", epochs=1)
    assert result.returncode == 2
    assert "labels.csv" in result.stderr


def test_dataset_weights_favour_the_smaller_dataset_by_a_power_of_its_share():
    from ml.train import dataset_weights

    datasets = np.array(["utkface"] * 75 + ["aaf-train"] * 25)
    weights = dataset_weights(datasets)  # power 0.5: by the square root
    assert weights.mean() == pytest.approx(1.0)
    assert weights[-1] / weights[0] == pytest.approx(np.sqrt(3))
    balanced = dataset_weights(datasets, 1.0)  # both datasets weigh the same in all
    assert balanced[datasets == "aaf-train"].sum() == pytest.approx(balanced[datasets == "utkface"].sum())
    assert np.all(dataset_weights(np.array(["one"] * 5)) == pytest.approx(1.0))


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


def test_a_budget_is_shared_in_proportion_to_the_stages_work():
    from ml.train import stage_minutes

    assert stage_minutes(10, 3, 1) == pytest.approx(7.5)
    assert stage_minutes(10, 3, 0) == pytest.approx(10)


def test_a_label_is_doubted_only_where_both_opinions_contradict_it():
    from ml.train import gender_doubts

    males = np.array([1, 1, 1, 0, 0, 0], np.float32)
    ours = np.array([0.05, 0.05, 0.50, 0.97, 0.97, 0.20])  # P(male)
    cydral = np.array([0.02, 0.60, 0.01, 0.99, 0.30, 0.99])
    assert gender_doubts(ours, cydral, males, 0.9).tolist() == [True, False, False, True, False, False]
    assert gender_doubts(ours, cydral, males, 0.99).tolist() == [False] * 6
    assert not gender_doubts(ours, cydral, males, 0.0).any()  # 0: every label trusted


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
    from ml.train import TrainConfig, _doubt_labels, load_chips, local_site

    chips = load_chips([str(tiny_folder)], 64, str(tmp_path / "cache"), faces=True)
    config = TrainConfig(out=str(tmp_path), gender_doubt=0.5)
    doubted = _doubt_labels(_constant_judge(0.1), chips, config, local_site())
    assert doubted.tolist() == (chips.males == 1).tolist() and doubted.sum() == 8
    with (tmp_path / "gender_doubts.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["key"] for row in rows] == chips.keys[doubted].tolist()
    assert all(row["label"] == "male" and float(row["p_male_cydral"]) <= 0.5 for row in rows)
    assert all(float(row["p_male_ours"]) == pytest.approx(0.1, abs=1e-3) for row in rows)
    # our judge at P(male) 0.1 is not sure enough for a threshold of 0.95
    strict = _doubt_labels(
        _constant_judge(0.1), chips, TrainConfig(out=str(tmp_path), gender_doubt=0.95), local_site()
    )
    assert not strict.any()


def _synthetic_faces(ages: np.ndarray, males: np.ndarray):
    """A ChipSet of random-noise chips with these labels (for the fitting plumbing, not for accuracy)."""
    from ml.train import ChipSet

    count = len(ages)
    return ChipSet(
        chips=np.random.default_rng(0).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8),
        ages=ages.astype(np.float32),
        males=males.astype(np.float32),
        datasets=np.array(["synthetic"] * count),
        keys=np.array([f"synthetic/{i}" for i in range(count)]),
        detected=np.ones(count, bool),
    )


def test_a_doubted_label_teaches_age_but_not_gender(tmp_path):
    import keras

    from ml.model import make_model
    from ml.train import TrainConfig, _compile, _fit, _trainer, gender_scales

    rng = np.random.default_rng(1)
    count = 32
    faces = _synthetic_faces(rng.integers(1, 90, count), rng.integers(0, 2, count))
    config = TrainConfig(out=str(tmp_path), batch_size=16, gender_balance=True)
    losses = {}
    for doubted in (np.ones(count, bool), None):
        keras.utils.set_random_seed(0)
        trainer, _ = _trainer(make_model(64, (8, 16), (1, 1)), config, 0)
        _compile(trainer, config, 1e-3, 1, 2, 0.0)
        scale = gender_scales(faces, config, doubted)
        _fit(trainer, faces, faces, config, 1, [], gender_scale=scale, seed=0)
        losses[doubted is None] = trainer.history.history
    doubting, trusting = losses[False], losses[True]
    assert doubting["gender_loss"][0] == 0.0 and doubting["age_loss"][0] > 0
    assert trusting["gender_loss"][0] > 0.1


def test_gender_balance_weighs_both_genders_the_same_in_each_dataset_and_age_bucket():
    from ml.train import TrainConfig, gender_balance_weights, gender_scales

    # utkface 50-59: 7 men, 3 women; aaf 50-59: 2 men, 2 women; utkface 20-29: 4 women, no man
    datasets = np.array(["utkface"] * 10 + ["aaf"] * 4 + ["utkface"] * 4)
    ages = np.array([55] * 14 + [25] * 4)
    males = np.array([1] * 7 + [0] * 3 + [1, 0, 1, 0] + [0] * 4)
    weights = gender_balance_weights(datasets, ages, males)
    skewed = slice(0, 10)
    assert weights[skewed][males[skewed] == 1].sum() == pytest.approx(
        weights[skewed][males[skewed] == 0].sum()
    )
    assert weights[0] == pytest.approx(10 / 14) and weights[9] == pytest.approx(10 / 6)
    assert np.all(weights[10:14] == 1.0)  # already balanced: untouched
    assert np.all(weights[14:] == 0.5)  # one gender only: n / (2 n), not blown up
    faces = _synthetic_faces(ages, males)
    faces.datasets = datasets
    assert gender_scales(faces, TrainConfig(), None) is None  # off by default
    doubted = np.zeros(len(ages), bool)
    doubted[0] = True
    scale = gender_scales(faces, TrainConfig(gender_balance=True), doubted)
    assert scale[0] == 0.0 and scale[1] == pytest.approx(10 / 14) and scale[9] == pytest.approx(10 / 6)


def test_each_stage_draws_its_own_batches(tmp_path):
    """No stage replays another's batches (same faces, same order, same augmentation), nor does a run
    that continues a model replay the batches that model was trained on."""
    from ml.model import make_model
    from ml.train import TrainConfig, _inputs, _trainer, stage_seed

    config = TrainConfig(out=str(tmp_path), batch_size=8)
    seeds = {stage: stage_seed(config, stage) for stage in ("trunk", "heads", "epoch", "polish")}
    assert len(set(seeds.values())) == 4
    assert stage_seed(config, "epoch") == seeds["epoch"]  # reproducible
    assert stage_seed(TrainConfig(seed=7), "epoch") != seeds["epoch"]
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "manifest.json").write_text(json.dumps({"sha256": "ab" * 32}))
    continued = TrainConfig(init_from=str(parent))
    assert stage_seed(continued, "polish") != seeds["polish"]

    count = 64
    faces = _synthetic_faces(np.arange(count), np.zeros(count))
    weights = np.ones(count, np.float32)

    def order(seed):  # the ages (0..63, one per face) of the stage's first batch
        data, _ = _inputs(faces, faces, weights, config, seed)
        return np.asarray(next(iter(data))[1]["age"]).tolist()

    assert order(seeds["epoch"]) == order(seeds["epoch"])
    assert order(seeds["epoch"]) != order(seeds["polish"])
    # the augmentation (inside the trainer on TensorFlow) draws differently too
    batch = np.repeat(faces.chips[:1].astype(np.float32), 4, axis=0)
    augmented = {}
    for stage in ("epoch", "polish"):
        trainer, _ = _trainer(make_model(64, (8, 16), (1, 1)), config, seeds[stage])
        augment = trainer.get_layer("augment")
        augmented[stage] = np.asarray(augment(batch, training=True))
    assert np.abs(augmented["epoch"] - augmented["polish"]).mean() > 1.0


def test_teachers_outputs_are_averaged_soft_targets_kept_beside_the_labels(tiny_folder, tmp_path):
    """The real shipped model as teacher on the real astronaut chips: its served outputs become each
    face's soft targets, next to the labels in the training targets, and are cached per run."""
    from ml.train import _targets, load_chips, teacher_targets

    chips = load_chips([str(tiny_folder)], 64, str(tmp_path / "cache"), faces=True)
    assert chips.soft_ages is None and set(_targets(chips)) == {"age", "gender"}
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
    targets = _targets(taught.take(np.arange(3)))
    assert targets["age"].shape == (3, 102) and np.array_equal(targets["age"][:, 0], chips.ages[:3])
    assert np.array_equal(targets["gender"][:, 0], chips.males[:3])
    assert np.array_equal(targets["gender"][:, 1], taught.soft_males[:3])


def test_distillation_losses_mix_the_teachers_targets_into_the_labels():
    import keras
    from keras import ops

    from ml.train import make_age_loss, make_distilled_gender_loss

    ages = np.array([[30.0], [4.0]], np.float32)
    probs = np.full((2, 101), 1 / 101, np.float32)
    probs[0, 28:33] += 0.05
    probs /= probs.sum(axis=1, keepdims=True)
    teacher = np.zeros((2, 101), np.float32)
    teacher[:, 50] = 1.0
    with_teacher = np.concatenate([ages, teacher], axis=1)
    plain = ops.convert_to_numpy(make_age_loss(0.1)(ages, probs))
    assert np.allclose(ops.convert_to_numpy(make_age_loss(0.1, 0.0)(with_teacher, probs)), plain)
    taught = ops.convert_to_numpy(make_age_loss(0.1, 1.0)(with_teacher, probs))
    l1 = 0.1 * np.abs((probs * np.arange(101)).sum(axis=1) - ages[:, 0])
    assert np.allclose(taught, -np.log(probs[:, 50]) + l1, rtol=1e-5)
    half = ops.convert_to_numpy(make_age_loss(0.1, 0.5)(with_teacher, probs))
    assert np.allclose(half, (plain + taught) / 2, rtol=1e-5)  # cross-entropy is linear in the target

    labels = np.array([[1.0], [0.0]], np.float32)
    male = np.array([[0.8], [0.3]], np.float32)
    keras_bce = keras.losses.BinaryCrossentropy(label_smoothing=0.05, reduction=None)
    both = np.array([[1.0, 0.2], [0.0, 0.9]], np.float32)
    untaught = ops.convert_to_numpy(make_distilled_gender_loss(0.05, 0.0)(both, male))
    assert np.allclose(untaught, ops.convert_to_numpy(keras_bce(labels, male)), rtol=1e-4)
    only_teacher = ops.convert_to_numpy(make_distilled_gender_loss(0.05, 1.0)(both, male))
    teacher_male = np.array([[0.2], [0.9]], np.float32)
    assert np.allclose(only_teacher, ops.convert_to_numpy(keras_bce(teacher_male, male)), rtol=1e-4)


def test_a_student_follows_its_teacher_against_the_labels(tmp_path):
    """Labels say every face is a woman, the teacher says man: fitted on the teacher alone the student's
    P(male) rises; on the labels alone it falls. Its reported accuracy is against the labels."""
    import keras

    from ml.model import make_model
    from ml.train import TrainConfig, _compile, _fit, _trainer, predict_chips

    count = 32
    faces = _synthetic_faces(np.full(count, 30), np.zeros(count))
    faces.soft_ages = np.eye(101, dtype=np.float32)[np.full(count, 30)]
    faces.soft_males = np.full(count, 0.95, np.float32)
    males = {}
    for weight in (1.0, 0.0):
        config = TrainConfig(out=str(tmp_path), batch_size=16, distill_weight=weight)
        keras.utils.set_random_seed(0)
        model = make_model(64, (8, 16), (1, 1))
        trainer, _ = _trainer(model, config, 0)
        _compile(trainer, config, 1e-2, 3, 2, 0.0, distill=True)
        _fit(trainer, faces, faces, config, 3, [], seed=0)
        males[weight] = float(predict_chips(model, faces.chips)["gender"].mean())
        accuracy = trainer.history.history["gender_acc"][-1]
        assert accuracy == pytest.approx(
            float((predict_chips(model, faces.chips)["gender"] < 0.5).mean()), abs=0.2
        )
    assert males[1.0] > 0.6 and males[0.0] < 0.4


def test_degradation_blurs_coarsens_and_greys_training_chips_only(astronaut):
    """`--degrade`: on the real astronaut, stacked as the fused trainer stacks both framings, some chips
    come out softer (less fine detail), some grey (each 3-channel chip on its own), and inference is
    untouched; the option reaches the trainer's augmenter, and is off by default."""
    from ml.model import RandomDegrade, make_model
    from ml.train import TrainConfig, _trainer

    chip = np.asarray(Image.fromarray(astronaut).crop((140, 20, 320, 200)).resize((64, 64)), np.float32)
    stack = np.repeat(np.concatenate([chip, chip], axis=-1)[None], 256, axis=0)
    layer = RandomDegrade(blur=0.3, low_res=0.15, grey=0.1, seed=5)
    assert np.array_equal(np.asarray(layer(stack)), stack)  # inference: identity
    out = np.asarray(layer(stack, training=True))

    def detail(x):  # mean absolute second difference along rows, per chip
        return np.abs(np.diff(x, n=2, axis=2)).mean(axis=(1, 2, 3))

    softer = detail(out) < 0.9 * detail(stack)
    assert 0.2 < softer.mean() < 0.6  # blur (30%, at a random strength) or low resolution (15%)
    for group in (out[..., :3], out[..., 3:]):
        grey = np.all(np.abs(group - group[..., :1]) < 1e-3, axis=(1, 2, 3))
        assert 0.04 < grey.mean() < 0.18
        assert not np.allclose(group[grey], stack[grey][..., :3])  # grey, not untouched colour
    untouched = np.all(np.abs(out - stack) < 1e-3, axis=(1, 2, 3))
    assert 0.35 < untouched.mean() < 0.75

    assert not TrainConfig().degrade
    for degrade in (False, True):
        trainer, _ = _trainer(make_model(64, (8, 16), (1, 1)), TrainConfig(degrade=degrade), 1)
        names = [layer.name for layer in trainer.get_layer("augment").layers]
        assert ("degrade" in names) == degrade


def test_batchnorm_statistics_come_from_the_resampled_chips_unless_told_otherwise():
    """The finishing step re-estimates the trunk's batch norm on the training faces cut the v4 way
    (`batchnorm_chips` "resampled", the default), or on the served chips; without resampled chips (a
    GPU machine's pack) on the served ones."""
    from dataclasses import replace

    import keras

    from ml.model import make_model
    from ml.train import TrainConfig, recalibrate_batchnorm, recalibrate_on_training_faces

    faces = _synthetic_faces(np.arange(48), np.zeros(48))
    faces = replace(faces, resampled=(faces.chips // 2).astype(np.uint8))  # another cut: darker
    start = make_model(64, (8, 16), (1, 1)).get_weights()

    def first_means(recalibrate) -> np.ndarray:
        model = make_model(64, (8, 16), (1, 1))
        model.set_weights(start)
        recalibrate(model)
        norms = [
            layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
        ]
        return np.asarray(norms[0].moving_mean)

    def on(chips, config):
        return first_means(
            lambda model: recalibrate_batchnorm(model, chips.astype(np.float32), seed=config.seed)
        )

    config = TrainConfig()
    assert config.batchnorm_chips == "resampled"
    assert not np.allclose(on(faces.resampled, config), on(faces.chips, config), rtol=1e-2)
    for chip_set, setting, expected in (
        (faces, "resampled", faces.resampled),
        (faces, "served", faces.chips),
        (replace(faces, resampled=None), "resampled", faces.chips),
    ):
        chosen = replace(config, batchnorm_chips=setting)
        finished = first_means(lambda model, s=chip_set, c=chosen: recalibrate_on_training_faces(model, s, c))
        np.testing.assert_allclose(finished, on(expected, chosen), rtol=1e-5)


def test_train_webp_shows_the_fitting_stages_each_chip_through_webp_and_leaves_the_rest_clean(astronaut):
    """`--train-webp Q`: the fitting stages see each chip (both framings) after one trip through WebP at
    quality Q, exactly what a GPU machine decodes from `ml.remote`'s pack; the set the finishing steps
    use keeps the clean chips. Off by default."""
    from ml.chips import webp_decode, webp_roundtrip
    from ml.remote import _encode
    from ml.train import ChipSet, TrainConfig, fitting_set

    corners = [(y, x) for y in range(20, 180, 40) for x in range(150, 310, 40)]
    chips = np.stack([astronaut[y : y + 64, x : x + 64] for y, x in corners])
    faces = np.ascontiguousarray(chips[:, ::-1])
    count = len(chips)
    clean = ChipSet(
        chips=chips.copy(),
        ages=np.arange(count, dtype=np.float32),
        males=(np.arange(count) % 2).astype(np.float32),
        datasets=np.array(["lit"] * count),
        keys=np.array([f"lit/{k}.jpg" for k in range(count)]),
        detected=np.ones(count, bool),
        faces=faces.copy(),
    )
    assert fitting_set(clean, TrainConfig()) is clean
    seen = fitting_set(clean, TrainConfig(train_webp=80))
    blob, offsets = _encode(chips)  # the remote pack, at its quality 80
    packed = np.stack([webp_decode(blob[offsets[k] : offsets[k + 1]].tobytes()) for k in range(count)])
    assert np.array_equal(seen.chips, packed)
    for lossy, original in ((seen.chips, chips), (seen.faces, faces)):
        assert lossy.shape == original.shape and lossy.dtype == np.uint8
        assert 0.3 < np.abs(lossy.astype(np.float32) - original).mean() < 8  # the same faces, compressed
    assert np.array_equal(clean.chips, chips) and np.array_equal(clean.faces, faces)  # finishing: clean
    assert np.array_equal(seen.ages, clean.ages) and np.array_equal(seen.keys, clean.keys)
    error = lambda lossy: np.abs(lossy.astype(np.float32) - chips).mean()  # noqa: E731
    assert error(webp_roundtrip(chips, 20)) > error(seen.chips)
