"""Plain result types returned by the public entry point."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Face:
    """One face found in an image, with its estimated age and gender.

    `box` is `(x1, y1, x2, y2)` in pixels of the upright (EXIF-corrected) original image.
    `age_low`/`age_high` bound an interval meant to hold the true age 80% of the time.
    `detected` is False when the face is the whole image (the `whole_image_fallback` option).
    """

    box: tuple[int, int, int, int]
    detected: bool
    detection_confidence: float
    age: float
    age_low: float
    age_high: float
    gender: str  # "female" or "male"
    gender_confidence: float
    landmarks: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict:
        """The JSON shape used by the CLI, the worker and the web API (no landmarks)."""
        data = asdict(self)
        data.pop("landmarks")
        data["box"] = list(self.box)
        return data
