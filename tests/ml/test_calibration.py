"""The age range: fitted to hold the true age for 80% of faces, narrower where the model is sure."""

from __future__ import annotations

import numpy as np

from ml.calibration import (
    age_interval,
    blurred_face_widening,
    chip_sharpness,
    expected_age,
    small_face_widening,
)
from ml.training.calibration import fit_blurred_face_widening, fit_interval_scale, fit_small_face_widening


def gaussian_rows(centres: np.ndarray, widths: np.ndarray) -> np.ndarray:
    grid = np.arange(101)
    rows = np.exp(-0.5 * ((grid[None, :] - centres[:, None]) / widths[:, None]) ** 2)
    return rows / rows.sum(axis=1, keepdims=True)


def test_fitted_scale_reaches_the_target_coverage_on_overconfident_outputs():
    rng = np.random.default_rng(0)
    truth = rng.uniform(5, 80, 4000)
    spread = rng.uniform(2, 8, 4000)
    said = truth + rng.normal(0, spread)  # real errors have the spread...
    probs = gaussian_rows(said, spread / 2)  # ...but the model claims half of it
    _, low, high = age_interval(probs, 1.0)
    assert np.mean((truth >= low) & (truth <= high)) < 0.6
    scale = fit_interval_scale(probs, truth, coverage=0.8)
    _, low, high = age_interval(probs, scale)
    assert abs(np.mean((truth >= low) & (truth <= high)) - 0.8) < 0.02
    assert scale > 1.5


def test_sharper_distributions_give_narrower_ranges():
    probs = gaussian_rows(np.array([30.0, 30.0]), np.array([1.5, 6.0]))
    age, low, high = age_interval(probs, 1.0)
    assert np.allclose(age, 30.0, atol=0.05)
    assert (high - low)[0] < (high - low)[1] / 2
    assert np.all(low <= age) and np.all(age <= high)


def test_expected_age_is_the_mean_of_the_distribution():
    probs = np.zeros((1, 101))
    probs[0, [20, 40]] = 0.5
    assert expected_age(probs)[0] == 30.0


def test_the_fitted_coverage_is_that_of_the_whole_year_range_served():
    """The range is shown in whole years; the fit must see those bounds, not finer ones."""
    rng = np.random.default_rng(1)
    truth = rng.integers(5, 80, 4000).astype(float)  # labels are whole years
    said = truth + rng.normal(0, 4, 4000)
    probs = gaussian_rows(said, np.full(4000, 2.0))
    scale = fit_interval_scale(probs, truth, coverage=0.8)
    age, low, high = age_interval(probs, scale)
    assert np.all(low == np.round(low)) and np.all(high == np.round(high))
    assert np.all(low <= age) and np.all(age <= high)
    assert abs(np.mean((truth >= low) & (truth <= high)) - 0.8) < 0.01


def test_small_faces_get_a_range_widened_as_much_as_their_larger_errors_need():
    """Faces made small lose detail: their errors grow while the model's claimed spread does not. The
    fitted factor restores the coverage, grows as faces shrink and is 1 where nothing is lost."""
    rng = np.random.default_rng(2)
    truth = rng.uniform(5, 80, 3000)
    noise = rng.normal(0, 1, 3000)
    extra = {None: 0.0, 4.0: 6.0, 8.0: 3.0, 12.0: 0.0}  # error added at each eye distance, years

    def predict(eye_px):
        said = truth + 4 * noise + extra[eye_px] * rng.normal(0, 1, 3000)
        return gaussian_rows(said, np.full(3000, 2.0))

    table = fit_small_face_widening(predict, truth, eyes=(4.0, 8.0, 12.0))
    factors = table["factor"]
    assert factors[0] > factors[1] > 1.1 and factors[2] < 1.05, table
    scale = fit_interval_scale(predict(None), truth)
    for eye in (4.0, 8.0):
        probs = predict(eye)
        _, low, high = age_interval(probs, scale)
        assert np.mean((truth >= low) & (truth <= high)) < 0.75  # unwidened, the range is too narrow
        _, low, high = age_interval(probs, scale * small_face_widening(np.full(3000, eye), table))
        assert abs(np.mean((truth >= low) & (truth <= high)) - 0.8) < 0.03


def test_the_widening_is_one_for_large_faces_and_without_a_table():
    table = {"eye_px": [4.0, 8.0], "factor": [1.6, 1.2], "native_eye_px": 16.0}
    widening = small_face_widening([2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 60.0], table)
    assert np.allclose(widening, [1.6, 1.6, 1.4, 1.2, 1.1, 1.0, 1.0])
    assert np.all(small_face_widening([3.0, 50.0], None) == 1.0)


def test_sharpness_falls_with_blur_whatever_the_faces_light(astronaut):
    """`chip_sharpness`: the astronaut's face chips lose fine detail step by step as they are blurred;
    darker or flatter light changes the figure little, since it is a ratio of two scales' detail."""
    from PIL import Image, ImageFilter

    face = Image.fromarray(astronaut[30:230, 160:360]).resize((64, 64), Image.Resampling.BOX)
    chips = np.stack(
        [np.asarray(face.filter(ImageFilter.GaussianBlur(radius))) for radius in (0.01, 0.6, 1.0, 1.5, 2.5)]
    )
    sharpness = chip_sharpness(chips)
    assert np.all(np.diff(sharpness) < 0), sharpness
    assert sharpness[0] > 0.35 and sharpness[3] < 0.22, sharpness
    dim = chip_sharpness(np.round(chips * 0.5 + 20).astype(np.uint8))
    assert np.allclose(dim, sharpness, rtol=0.1), (dim, sharpness)


def test_blurred_faces_get_a_range_widened_as_much_as_their_larger_errors_need():
    """Blurred faces lose detail: their errors grow while the model's claimed spread does not. The
    factor, placed at each blur's median sharpness, restores the coverage, grows as chips get blurrier
    and is 1 for chips as sharp as the faces it was fitted on."""
    rng = np.random.default_rng(3)
    truth = rng.uniform(5, 80, 3000)
    noise = rng.normal(0, 1, 3000)
    extra = {None: 0.0, 0.03: 0.0, 0.06: 3.0, 0.12: 6.0}  # error added at each blur, years
    sharp = {None: 0.25, 0.03: 0.2, 0.06: 0.12, 0.12: 0.08}  # each blur's typical sharpness

    def predict(blur):
        said = truth + 4 * noise + extra[blur] * rng.normal(0, 1, 3000)
        return gaussian_rows(said, np.full(3000, 2.0))

    def sharpness_of(blur):
        return sharp[blur] * rng.uniform(0.8, 1.2, 3000)

    table = fit_blurred_face_widening(predict, sharpness_of, truth, blurs=(0.03, 0.06, 0.12))
    assert table["sharpness"] == sorted(table["sharpness"]) and len(table["sharpness"]) == 3, table
    factors = table["factor"]
    assert factors[0] > factors[1] > 1.1 and factors[2] < 1.05, table
    assert abs(table["native_sharpness"] - 0.25) < 0.01
    scale = fit_interval_scale(predict(None), truth)
    for blur in (0.06, 0.12):
        probs = predict(blur)
        _, low, high = age_interval(probs, scale)
        assert np.mean((truth >= low) & (truth <= high)) < 0.75  # unwidened, the range is too narrow
        widening = blurred_face_widening(np.full(3000, sharp[blur]), table)
        _, low, high = age_interval(probs, scale * widening)
        assert abs(np.mean((truth >= low) & (truth <= high)) - 0.8) < 0.03


def test_the_blur_widening_is_one_for_sharp_chips_and_without_a_table():
    table = {"sharpness": [0.08, 0.12], "factor": [1.6, 1.2], "native_sharpness": 0.24, "input": "face"}
    widening = blurred_face_widening([0.05, 0.08, 0.10, 0.12, 0.18, 0.24, 0.40], table)
    assert np.allclose(widening, [1.6, 1.6, 1.4, 1.2, 1.1, 1.0, 1.0])
    assert np.all(blurred_face_widening([0.01, 0.5], None) == 1.0)
