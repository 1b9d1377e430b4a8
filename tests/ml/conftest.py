"""Real images and the real shipped model for the engine's tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.training.data import DATASETS_DIR


@pytest.fixture(scope="session")
def engine(predictor):
    """The shipped model with its detector (`ml.Predictor.load()`), shared with the service tests."""
    from ml import Predictor

    assert isinstance(predictor, Predictor)
    return predictor


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def to_jpeg(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=92, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not (DATASETS_DIR / "utkface" / "labels.csv").is_file():
        pytest.skip(f"needs the labelled datasets, expected at {DATASETS_DIR} (or set AGEGENDER_DATASETS)")
    return DATASETS_DIR
