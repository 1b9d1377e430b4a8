"""The scanned-print augmentation and validation sets (`ml.training.scans`) on a real face."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    from skimage import data

    crop = Image.fromarray(data.astronaut()).crop((150, 40, 290, 220)).resize((64, 64))
    return np.asarray(crop).astype(np.float32)


def test_random_scan_spoils_a_share_of_chips_alike_in_both_framings_and_nothing_at_inference(face):
    from ml.training.scans import random_scan

    stacked = np.concatenate([face, face], axis=-1)[None].repeat(200, axis=0)
    layer = random_scan(0.5, seed=3)
    assert np.array_equal(np.asarray(layer(stacked, training=False)), stacked)
    out = np.asarray(layer(stacked, training=True))
    assert out.min() >= 0 and out.max() <= 255
    changed = np.abs(out - stacked).mean(axis=(1, 2, 3)) > 0.5
    assert 0.35 < changed.mean() < 0.65  # about `rate` of the chips
    assert np.allclose(out[..., :3], out[..., 3:], atol=1e-3)  # both framings spoilt the same way
    grey = np.abs(out[..., 0] - out[..., 1]).mean(axis=(1, 2)) < 0.5
    assert grey.any() and not grey.all()


def test_jpeg_blocking_is_the_identity_at_a_fine_step_and_coarsens_at_a_large_one(face):
    from ml.training.scans import dct_matrix, random_scan

    layer = random_scan(1.0)
    x = face[None]
    fine = np.asarray(layer._jpeg(x, np.full((1,), 0.01, np.float32)))
    coarse = np.asarray(layer._jpeg(x, np.full((1,), 4.0, np.float32)))
    assert np.abs(fine - x).max() < 1.5
    # coarse quantisation removes high frequencies: most of each 8×8 block's fine coefficients vanish
    d = dct_matrix()

    def fine_energy(image):
        blocks = image[0, :, :, 1].reshape(8, 8, 8, 8).transpose(0, 2, 1, 3) - 128.0
        coefficients = np.einsum("uy,abyx,vx->abuv", d, blocks, d)
        u, v = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
        return np.abs(coefficients[..., u + v >= 6]).mean()

    assert fine_energy(coarse) < 0.5 * fine_energy(x)


def test_scan_chips_are_the_same_set_every_run_and_one_in_five_is_grey(face):
    from ml.training.scans import scan_chips

    chips = np.repeat(face[None], 100, axis=0)
    first, again = scan_chips(chips), scan_chips(chips)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, scan_chips(chips, seed=1))
    grey = np.abs(first[..., 0].astype(int) - first[..., 2].astype(int)).mean(axis=(1, 2)) < 2
    assert 0.08 < grey.mean() < 0.35
    assert np.abs(first.astype(float) - chips).mean() > 10


def test_scan_photo_keeps_the_photo_shape(face):
    from ml.training.scans import scan_photo

    photo = np.asarray(Image.fromarray(face.astype(np.uint8)).resize((150, 200)))
    out = scan_photo(photo, np.random.default_rng(0), face_px=120)
    assert out.shape == photo.shape and out.dtype == np.uint8


def test_cut_chips_fill_one_side_with_the_repeated_edge(face):
    from ml.training.scans import cut_chips

    chips = np.repeat(face[None], 20, axis=0)
    cut = cut_chips(chips)
    for chip in cut:
        flat = [
            np.ptp(chip[:, -8:], axis=1).max() == 0,  # right: every row constant over the cut
            np.ptp(chip[:, :8], axis=1).max() == 0,
            np.ptp(chip[-8:], axis=0).max() == 0,
            np.ptp(chip[:8], axis=0).max() == 0,
        ]
        assert sum(flat) == 1
    assert not np.array_equal(cut, chips)
