"""The served model on LiteRT answers as the Keras model it was exported from, and only that one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ml import Predictor
from ml.artifact import DEFAULT_MODEL_DIR, read_manifest
from ml.runtime import default_runtime
from tests.ml.conftest import to_jpeg


@pytest.fixture(scope="module")
def on_keras():
    return Predictor.load(runtime="keras")


def test_the_shipped_model_is_served_on_litert_from_its_own_keras_file(engine):
    manifest = read_manifest(DEFAULT_MODEL_DIR)
    assert engine.runtime == "litert"
    assert manifest["litert"]["from_sha256"] == manifest["sha256"]
    assert manifest["litert"]["quantization"].startswith("dynamic-range int8")


def test_litert_and_keras_give_the_same_faces(engine, on_keras, astronaut):
    group = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    for photo in (to_jpeg(astronaut), to_jpeg(group)):
        ours, theirs = engine.predict(photo), on_keras.predict(photo)
        assert len(ours) == len(theirs) >= 1
        for a, b in zip(ours, theirs, strict=True):  # int8 weights on LiteRT: close, not equal
            assert a.box == b.box and a.gender == b.gender
            assert a.age == pytest.approx(b.age, abs=1.0)
            assert a.gender_confidence == pytest.approx(b.gender_confidence, abs=0.03)
            assert abs(a.age_low - b.age_low) <= 2 and abs(a.age_high - b.age_high) <= 2


def test_a_litert_file_made_from_another_keras_file_is_not_used(tmp_path):
    for item in DEFAULT_MODEL_DIR.iterdir():
        (tmp_path / item.name).symlink_to(item)
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert default_runtime(manifest, tmp_path) == "litert"
    manifest["litert"]["from_sha256"] = "0" * 64  # the .keras was retrained since
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert default_runtime(read_manifest(tmp_path), tmp_path) == "keras"
    (tmp_path / "model.tflite").unlink()
    manifest["litert"]["from_sha256"] = manifest["sha256"]
    assert default_runtime(manifest, tmp_path) == "keras"  # nor a missing one
    shutil.rmtree(tmp_path)
