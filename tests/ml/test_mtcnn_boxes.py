"""`ml.mtcnn_boxes` computes what the `mtcnn` package's own functions compute, on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ml import mtcnn_boxes as ours

tf = pytest.importorskip("tensorflow")
package_boxes = pytest.importorskip("mtcnn.utils.bboxes")
package_landmarks = pytest.importorskip("mtcnn.utils.landmarks")


@pytest.fixture()
def boxes() -> np.ndarray:
    rng = np.random.default_rng(7)
    corner = rng.uniform(-20, 300, (40, 2))
    size = rng.uniform(10, 120, (40, 2))
    score = rng.uniform(0, 1, (40, 1))
    return np.concatenate([np.zeros((40, 1)), corner, corner + size, score], axis=1)


@pytest.mark.parametrize("method, threshold", [("union", 0.7), ("union", 0.3), ("min", 0.7)])
def test_nms(boxes, method, threshold):
    theirs = package_boxes.smart_nms_from_bboxes(boxes, threshold=threshold, method=method, initial_sort=True)
    assert np.array_equal(ours.nms(boxes, threshold, method), theirs)


def test_square_adjust_and_landmarks(boxes):
    rng = np.random.default_rng(8)
    offsets, scores = rng.normal(0, 0.1, (40, 4)), rng.uniform(0, 1, (40, 2))
    landmarks = rng.uniform(0, 1, (40, 10)).astype(np.float32)
    assert np.allclose(ours.square(boxes), package_boxes.resize_to_square(boxes))
    theirs = package_boxes.adjust_bboxes(package_boxes.replace_confidence(boxes.copy(), scores), offsets)
    assert np.allclose(ours.adjust(boxes, offsets, scores), theirs)
    placed = package_landmarks.adjust_landmarks(tf.constant(landmarks), boxes)
    assert np.allclose(ours.place_landmarks(landmarks, boxes), placed)


def test_json(boxes):
    rows = np.concatenate([boxes, np.random.default_rng(9).uniform(-5, 320, (40, 10))], axis=1)
    limited = package_boxes.limit_bboxes(rows, images_shapes=np.array([[240, 320, 3]]), limit_landmarks=False)
    theirs = package_boxes.to_json(limited, images_count=1, input_as_width_height=False)[0]
    mine = ours.as_json(rows, 240, 320)
    assert [f["box"] for f in mine] == [f["box"] for f in theirs]
    assert [f["confidence"] for f in mine] == [f["confidence"] for f in theirs]
    for a, b in zip(mine, theirs, strict=True):
        assert {k: [int(v) for v in p] for k, p in a["keypoints"].items()} == {
            k: [int(v) for v in p] for k, p in b["keypoints"].items()
        }


@pytest.mark.parametrize("side", [24, 48])
def test_patches_are_tensorflows_crop_and_resize(astronaut, boxes, side):
    height, width = astronaut.shape[:2]
    normalised = boxes[:, [2, 1, 4, 3]] / np.array([height, width, height, width])
    theirs = tf.image.crop_and_resize(
        astronaut[None].astype(np.float32),
        normalised,
        np.zeros(len(boxes), np.int32),
        (side, side),
        extrapolation_value=127.5,
    ).numpy()
    mine = ours.patches(astronaut, boxes, side, 127.5)
    assert np.abs(mine - theirs).max() < 1e-2
