"""Alignment maps the five landmarks onto the template within a pixel, at any scale and tilt."""

from __future__ import annotations

import numpy as np
import pytest

from ml import alignment


def dot_centroids(chip: np.ndarray, points: np.ndarray, radius: int = 5) -> np.ndarray:
    grey = chip.astype(float).mean(axis=2)
    found = []
    for x, y in points:
        y0, y1, x0, x1 = int(y) - radius, int(y) + radius + 1, int(x) - radius, int(x) + radius + 1
        window = grey[y0:y1, x0:x1]
        gy, gx = np.mgrid[y0:y1, x0:x1]
        found.append(((window * gx).sum() / window.sum(), (window * gy).sum() / window.sum()))
    return np.array(found)


@pytest.mark.parametrize(("scale", "angle"), [(0.8, 0.25), (2.5, -0.2), (6.0, 0.1), (9.0, -0.35)])
def test_landmark_dots_land_on_the_template(scale, angle):
    size = 96
    template = alignment.template(size)
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    placement = np.array([[c, -s, 500.0], [s, c, 450.0]])
    landmarks = alignment.apply(placement, template)  # where the face's landmarks are in the photo
    photo = np.zeros((1500, 1500, 3), np.uint8)
    yy, xx = np.mgrid[:1500, :1500]
    radius = max(2.0, 1.5 * scale)
    for x, y in landmarks:
        photo[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = 255
    chip = alignment.align(photo, landmarks, size)
    assert chip.shape == (size, size, 3) and chip.dtype == np.uint8
    error = np.linalg.norm(dot_centroids(chip, template) - template, axis=1)
    assert error.max() < 1.0, error


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    truth = np.array([[1.7, -0.4, 12.0], [0.4, 1.7, -3.0]])
    estimated = alignment.similarity(src, alignment.apply(truth, src))
    assert np.allclose(estimated, truth, atol=1e-9)


def test_faces_near_the_border_are_padded_not_failed():
    photo = np.full((120, 120, 3), 80, np.uint8)
    landmarks = alignment.template(96) * 1.2 - 20  # partly outside the photo
    chip = alignment.align(photo, landmarks, 96)
    assert chip.shape == (96, 96, 3)
    assert np.all(chip == 80)  # replicated border, no black frame


def test_a_face_small_in_the_photo_gives_the_chip_the_aligner_would_cut_from_it(astronaut):
    """`as_if_small` (used to fit the range's widening for small faces) matches the real thing: the
    photo shrunk until the eyes are 7 px apart, then aligned."""
    from PIL import Image

    from ml.detection import FaceDetector

    landmarks = FaceDetector().detect(astronaut)[0].landmarks
    chip = alignment.align(astronaut, landmarks, 64)
    eyes = alignment.eye_distance(landmarks)
    assert alignment.native_eye_distance(64) == pytest.approx(14.38, abs=0.01)
    factor = 7.0 / eyes
    size = (round(astronaut.shape[1] * factor), round(astronaut.shape[0] * factor))
    small_photo = np.asarray(Image.fromarray(astronaut).resize(size, Image.Resampling.BOX))
    shrunk = (landmarks + 0.5) * np.array(size) / astronaut.shape[1::-1] - 0.5  # pixel centres
    served = alignment.align(small_photo, shrunk, 64).astype(float)

    def off(chips: np.ndarray) -> float:
        return float(np.abs(chips[0].astype(float) - served).mean())

    # far closer to the chip of the shrunk photo than the sharp chip is, or one made too small
    assert off(alignment.as_if_small(chip[None], 7.0)) < 0.6 * off(chip[None])
    assert off(alignment.as_if_small(chip[None], 7.0)) < 0.8 * off(alignment.as_if_small(chip[None], 4.0))
    assert np.array_equal(alignment.as_if_small(chip[None], 20.0)[0], chip)  # large faces: untouched
