"""Plain result types returned by the public entry point."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Face:
    """One face found in an image, with its estimated age and gender.

    `box` is `(x1, y1, x2, y2)` in pixels of the upright (EXIF-corrected) original image.
    `age_low`/`age_high` bound an interval meant to hold the true age 80% of the time.
    `detected` is False when the face is the whole image (the `whole_image_fallback` option).
    `landmarks` are the detector's five points (`ml.detection.LANDMARK_NAMES`: left/right as seen in the
    image); `left_eye`/`right_eye` name the person's own eyes, as DeepFace does.
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

    @property
    def left_eye(self) -> tuple[int, int] | None:
        """The person's left eye (on the right of the image), whole pixels. None for the whole image read
        as one face (no detection at all, confidence 0): its landmarks are assumed, not found."""
        return self._eye(1)

    @property
    def right_eye(self) -> tuple[int, int] | None:
        """The person's right eye (on the left of the image); see `left_eye`."""
        return self._eye(0)

    def _eye(self, landmark: int) -> tuple[int, int] | None:
        if len(self.landmarks) < 2 or (not self.detected and self.detection_confidence == 0):
            return None
        x, y = self.landmarks[landmark]
        return (int(round(x)), int(round(y)))

    def to_dict(self) -> dict:
        """The JSON shape used by the CLI, the worker and the web API (of the landmarks, the eyes)."""
        data = asdict(self)
        data.pop("landmarks")
        data["box"] = list(self.box)
        for name in ("left_eye", "right_eye"):
            eye = getattr(self, name)
            data[name] = list(eye) if eye is not None else None
        return data
