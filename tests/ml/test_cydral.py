"""The Cydral networks ported to Keras (`ml.training.cydral`) and the "face" framing they read, on a real
face."""

from __future__ import annotations

import numpy as np
import pytest

from ml.alignment import align, reframe, template

pytest.importorskip("onnx", reason="porting needs the onnx package (requirements-dev.txt)")


@pytest.fixture(scope="module")
def dlib_chips(astronaut):
    """The rival's own 64-px age chip and 32-px gender chip of the astronaut (dlib landmarks and crops)."""
    from ml.training.peer import PeerPredictor

    frontend = PeerPredictor.load().frontend
    rgb = np.ascontiguousarray(astronaut)
    (face,) = frontend.extract(rgb, frontend.detect(rgb))
    return face.age_chip, face.gender_chip


@pytest.mark.parametrize("task", ["age", "gender"])
def test_port_gives_the_onnx_networks_answers(task, dlib_chips):
    import onnxruntime

    from ml.training.cydral import MEANS, bundled_onnx, port

    chip = dlib_chips[0] if task == "age" else dlib_chips[1]
    rng = np.random.default_rng(3)
    # the real face, its mirror and two noisy copies
    chips = np.stack(
        [chip, chip[:, ::-1], *(np.clip(chip + rng.normal(0, 12, chip.shape), 0, 255) for _ in "ab")]
    )
    chips = chips.astype(np.float32)
    session = onnxruntime.InferenceSession(str(bundled_onnx(task)))
    feed = ((chips - np.array(MEANS, np.float32)) / 256.0).transpose(0, 3, 1, 2)
    expected = session.run(None, {session.get_inputs()[0].name: feed})[0]

    outputs = port(bundled_onnx(task), f"cydral_{task}")(chips)
    logits = np.asarray(outputs["logits"], dtype=np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert outputs["features"].shape == (4, 256 if task == "age" else 16)
    if task == "gender":
        assert probabilities[0].argmax() == 0  # "female", the package's label order


def test_face_framing_matches_dlibs_chip(engine, astronaut, dlib_chips):
    """Our tight framing from MTCNN landmarks shows the region of the rival's chip; ours does not."""
    (found,) = engine.detector.detect_many([np.asarray(astronaut)])[0]
    dlib_age_chip = dlib_chips[0].astype(np.float64)
    tight = align(np.asarray(astronaut), found.landmarks, 64, "face").astype(np.float64)
    loose = align(np.asarray(astronaut), found.landmarks, 64, "chip").astype(np.float64)
    # different landmark detectors put the face 1-2 px apart (measured: 22.5 grey levels, 11.8 after a
    # 2-px shift; our own framing differs by 66)
    assert np.abs(tight - dlib_age_chip).mean() < 30
    assert np.abs(loose - dlib_age_chip).mean() > 2 * np.abs(tight - dlib_age_chip).mean()


def test_reframe_cuts_the_face_framing_out_of_a_chip(astronaut, engine):
    (found,) = engine.detector.detect_many([np.asarray(astronaut)])[0]
    chip96 = align(np.asarray(astronaut), found.landmarks, 96)
    direct = align(np.asarray(astronaut), found.landmarks, 64, "face").astype(np.float64)
    recut = reframe(chip96[None], 64, "face")[0].astype(np.float64)
    assert recut.shape == (64, 64, 3)
    assert np.abs(recut - direct).mean() < 6  # only a second resampling apart
    # in the tight framing the eyes sit higher in the chip and further apart
    assert template(64, "face")[0, 1] < template(64, "chip")[0, 1]
    assert np.ptp(template(64, "face")[:2, 0]) > 1.5 * np.ptp(template(64, "chip")[:2, 0])


def test_gender_expert_blends_in_logit_space_and_survives_saving(engine, astronaut, tmp_path):
    """`with_gender_expert`: weight 0 is our head, weight 1 the untouched Cydral gender network."""
    import keras
    import onnxruntime

    from ml.model import with_gender_expert
    from ml.training.cydral import MEANS, bundled_onnx, port

    (found,) = engine.detector.detect_many([np.asarray(astronaut)])[0]
    chips = engine.chips_of(np.asarray(astronaut), found.landmarks)
    chips = {name: np.concatenate([c, c[:, :, ::-1]]).astype(np.float32) for name, c in chips.items()}
    fused = engine.model
    if "agegender_fused" in [layer.name for layer in fused.layers]:  # the shipped model has one already
        fused = fused.get_layer("agegender_fused")
    ours = fused.predict_on_batch(chips)
    expert = port(bundled_onnx("gender"), "cydral_gender_expert")

    alone = with_gender_expert(fused, expert, 0.0).predict_on_batch(chips)
    np.testing.assert_allclose(alone["gender"], ours["gender"], atol=1e-5)
    np.testing.assert_allclose(alone["age"], ours["age"], atol=1e-6)

    small = chips["face"].reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    session = onnxruntime.InferenceSession(str(bundled_onnx("gender")))
    feed = ((small - np.array(MEANS, np.float32)) / 256.0).transpose(0, 3, 1, 2)
    theirs = session.run(None, {session.get_inputs()[0].name: feed})[0][:, 1]
    np.testing.assert_allclose(
        with_gender_expert(fused, expert, 1.0).predict_on_batch(chips)["gender"][:, 0], theirs, atol=1e-4
    )

    def logit(p):
        p = np.asarray(p, np.float64).reshape(-1)
        return np.log(p) - np.log1p(-p)

    half = with_gender_expert(fused, expert, 0.5)
    mixed = half.predict_on_batch(chips)["gender"]
    np.testing.assert_allclose(logit(mixed), 0.5 * logit(ours["gender"]) + 0.5 * logit(theirs), atol=1e-3)
    half.save(tmp_path / "blend.keras")
    reloaded = keras.models.load_model(tmp_path / "blend.keras", compile=False)
    np.testing.assert_allclose(reloaded.predict_on_batch(chips)["gender"], mixed, atol=1e-6)


def test_the_ported_age_network_can_be_trained_in_a_compiled_graph():
    """Its gradient in a `tf.function` (as `fit` runs it) once crashed TensorFlow 2.21 with oneDNN on.

    Run in a child process: the failure was a segmentation fault, which would take pytest down.
    """
    import subprocess
    import sys
    from pathlib import Path

    script = """
import numpy as np, tensorflow as tf
from ml.training.cydral import bundled_onnx, port
net = port(bundled_onnx("age"), "cydral_age")
x = tf.constant(np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32"))
@tf.function
def step(chips):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(net(chips, training=True)["logits"])
    return tape.gradient(loss, net.trainable_variables)
grads = step(x)
print("gradients", len(grads), all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads))
"""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=root
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gradients" in result.stdout and result.stdout.strip().endswith("True")
