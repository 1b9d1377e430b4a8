"""The faces training sees: cached chips as the service cuts them, resampled and WebP variants, and
each face's weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[2]


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
    from ml.detection import FaceDetector
    from ml.images import load_image
    from ml.training.chips import DETECTOR_PROPOSER
    from ml.training.chipsets import load_chips

    # The cache's detector: MTCNN's own pyramid (`DETECTOR_PROPOSER`), where the service has BlazeFace
    # propose; the same networks decide and place the landmarks, checked below to within a tenth of the
    # eyes' distance.
    detector = FaceDetector(proposer=DETECTOR_PROPOSER)

    folder = _portraits(
        tmp_path / "same",
        astronaut,
        [(0.8 + 0.2 * i, (240 + 7 * i, 264 + 5 * i), 30 + i, "female") for i in range(3)],
    )
    cached = load_chips([str(folder)], 64, str(tmp_path / "cache"), faces=True)
    assert cached.faces.shape == (3, 64, 64, 3) and cached.detected.all()
    for i, key in enumerate(cached.keys):
        photo = np.asarray(load_image(folder / key.split("/")[1]))
        (found,) = detector.detect(photo)
        cut = engine.chips_of(photo, found.landmarks)
        for name, chips in (("image", cached.chips), ("face", cached.faces)):
            assert np.array_equal(chips[i], cut[name][0]), (name, key)
        (served,) = engine.detector.detect(photo)
        eyes = np.linalg.norm(found.landmarks[0] - found.landmarks[1])
        assert np.abs(served.landmarks - found.landmarks).max() <= 0.1 * eyes
    # the landmarks they were cut from are kept, so that they can be cut again without the detector
    from ml.training.chips import build_cache

    with np.load(build_cache(folder, 64, tmp_path / "cache")) as data:
        photos = [np.asarray(load_image(folder / name)) for name in data["files"]]
        found = [np.asarray(detector.detect(photo)[0].landmarks) for photo in photos]
        np.testing.assert_allclose(np.stack(found), data["landmarks"], atol=1e-4)


def test_resampled_chips_are_the_same_faces_cut_another_way_and_mixed_in_by_share(tmp_path, astronaut):
    """`--resampled-share`: besides the served chips, each face cut the way of pipeline v4 (a larger warp
    shrunk with Lanczos; the face framing re-cut from it) from the cache's landmarks; training draws
    those for a share of the faces, validation never."""
    from dataclasses import replace

    from ml.alignment import align
    from ml.training.chipsets import load_chips, split_chips
    from ml.training.config import TrainConfig
    from ml.training.feeding import fit_inputs

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
        data, validation = fit_inputs(train_set, val_set, weights, config, seed=3)
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
        fit_inputs(bare, val_set, weights, TrainConfig(resampled_share=0.5), seed=3)


def test_train_webp_shows_the_fitting_stages_each_chip_through_webp_and_leaves_the_rest_clean(astronaut):
    """`--train-webp Q`: the fitting stages see each chip (both framings) after one trip through WebP at
    quality Q, exactly what a GPU machine decodes from `ml.training.remote`'s pack; the set the finishing
    steps use keeps the clean chips. Off by default."""
    from ml.training.chips import webp_decode, webp_roundtrip
    from ml.training.chipsets import ChipSet, fitting_set
    from ml.training.config import TrainConfig
    from ml.training.remote import encode_chips

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
    blob, offsets = encode_chips(chips)  # the remote pack, at its quality 80
    packed = np.stack([webp_decode(blob[offsets[k] : offsets[k + 1]].tobytes()) for k in range(count)])
    assert np.array_equal(seen.chips, packed)
    for lossy, original in ((seen.chips, chips), (seen.faces, faces)):
        assert lossy.shape == original.shape and lossy.dtype == np.uint8
        assert 0.3 < np.abs(lossy.astype(np.float32) - original).mean() < 8  # the same faces, compressed
    assert np.array_equal(clean.chips, chips) and np.array_equal(clean.faces, faces)  # finishing: clean
    assert np.array_equal(seen.ages, clean.ages) and np.array_equal(seen.keys, clean.keys)
    error = lambda lossy: np.abs(lossy.astype(np.float32) - chips).mean()  # noqa: E731
    assert error(webp_roundtrip(chips, 20)) > error(seen.chips)


def test_dataset_weights_favour_the_smaller_dataset_by_a_power_of_its_share():
    from ml.training.losses import dataset_weights

    datasets = np.array(["utkface"] * 75 + ["aaf-train"] * 25)
    weights = dataset_weights(datasets)  # power 0.5: by the square root
    assert weights.mean() == pytest.approx(1.0)
    assert weights[-1] / weights[0] == pytest.approx(np.sqrt(3))
    balanced = dataset_weights(datasets, 1.0)  # both datasets weigh the same in all
    assert balanced[datasets == "aaf-train"].sum() == pytest.approx(balanced[datasets == "utkface"].sum())
    assert np.all(dataset_weights(np.array(["one"] * 5)) == pytest.approx(1.0))
