"""`ml.training.soup`: a model between a finished model and its fine-tuning, weight by weight."""

from __future__ import annotations

import numpy as np
import pytest

from ml.training.soup import average_weights, main


def test_the_average_is_the_base_at_0_the_tuned_at_1_and_between_them_in_between():
    rng = np.random.default_rng(0)
    base = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    tuned = [w + 1.0 for w in base]
    assert all(np.array_equal(a, b) for a, b in zip(average_weights(base, tuned, 0.0), base, strict=True))
    assert all(np.allclose(a, b) for a, b in zip(average_weights(base, tuned, 1.0), tuned, strict=True))
    middle = average_weights(base, tuned, 0.3)
    assert all(np.allclose(m, b + 0.3) and m.dtype == np.float32 for m, b in zip(middle, base, strict=True))


def test_models_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match="architecture"):
        average_weights([np.zeros((2, 2))], [np.zeros((3, 2))], 0.5)


def test_alpha_outside_0_to_1_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path), "1.5", str(tmp_path / "out")])
