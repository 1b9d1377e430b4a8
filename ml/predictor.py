"""The one public entry point: `Predictor.load()` then `predict(image)` → list of `Face`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml.alignment import align, eye_distance, reframe, whole_image_landmarks
from ml.artifact import DEFAULT_MODEL_DIR, read_manifest
from ml.calibration import age_interval, range_widening
from ml.faces import Face
from ml.images import ImageSource, Photo, decode_photo

#: Faces per model call; a request with more faces is split into several calls of this size.
MAX_BATCH = 64


class Predictor:
    """Detector + aligner + model (`ml.runtime`), loaded once and reused for every image."""

    def __init__(self, model, manifest: dict, detector, model_dir: Path | None = None) -> None:
        """`model`: an `ml.runtime.LiteRTModel` or `KerasModel` (a bare Keras model is wrapped)."""
        from ml.runtime import KerasModel, LiteRTModel

        self.manifest = manifest
        self.input_size = int(manifest["input_size"])
        # model input name -> (framing, size): "image" is our chip; a fused model also takes "face"
        inputs = manifest.get("inputs") or {"image": {"geometry": "chip", "size": self.input_size}}
        self._inputs = {name: (spec["geometry"], int(spec["size"])) for name, spec in inputs.items()}
        self.interval_scale = float(manifest["interval"]["scale"])
        # a face small in the photo gets a wider range (its chip holds less detail); None: no widening
        self.small_faces = manifest["interval"].get("small_faces")
        # so does a blurred face, by the sharpness of its chip of the input the table names
        self.blurred_faces = manifest["interval"].get("blurred_faces")
        self.model_version = f"{manifest['name']} {manifest['version']}"
        if not isinstance(model, (KerasModel, LiteRTModel)):
            model = KerasModel(model, {name: size for name, (_, size) in self._inputs.items()})
        self._infer = model
        self.runtime = "litert" if isinstance(model, LiteRTModel) else "keras"
        self._model_dir = model_dir
        self._keras = None
        self._detector = detector

    @property
    def model(self):
        """The Keras network, as measurements and tests call it (loaded now if the model is served on
        LiteRT: that imports TensorFlow)."""
        if self.runtime == "keras":
            return self._infer.keras
        if self._keras is None:
            from ml.runtime import load_keras

            self._keras = load_keras(self._model_dir / self.manifest["file"])
        return self._keras

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike | None = None,
        proposer: str = "blazeface",
        runtime: str | None = None,
    ) -> Predictor:
        """The model in `model_dir` (default: `AGEGENDER_MODEL_DIR`, else the shipped one), warmed up, with a
        detector whose candidates come from `proposer` (`ml.detection.PROPOSERS`), on `runtime`
        (`ml.runtime.RUNTIMES`; default: LiteRT where the folder holds its export)."""
        from ml.detection import FaceDetector
        from ml.runtime import LiteRTModel, default_runtime, load_keras

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        model_dir = Path(model_dir or os.environ.get("AGEGENDER_MODEL_DIR") or DEFAULT_MODEL_DIR)
        manifest = read_manifest(model_dir)
        runtime = runtime or default_runtime(manifest, model_dir)
        if runtime == "litert":
            model = LiteRTModel(model_dir / manifest["litert"]["file"])
        else:
            model = load_keras(model_dir / manifest["file"])
        predictor = cls(model, manifest, FaceDetector(proposer=proposer), model_dir)
        predictor.predict_chips(
            predictor.chips_of(np.zeros((8, 8, 3), np.uint8), whole_image_landmarks(8, 8))
        )
        return predictor  # warmed up: the first call's allocations (or the graph's tracing) are done

    @property
    def detector(self):
        """The `ml.detection.FaceDetector` that `predict` uses."""
        return self._detector

    @property
    def input_specs(self) -> dict[str, tuple[str, int]]:
        """Each model input's name → (framing in `ml.alignment.GEOMETRIES`, chip size in pixels)."""
        return dict(self._inputs)

    def chips_of(self, rgb: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
        """The model's input for one face: each input's chip, aligned from the photo, with a batch axis."""
        return {
            name: align(rgb, landmarks, size, geometry)[None]
            for name, (geometry, size) in self._inputs.items()
        }

    def predict(self, source: ImageSource | Photo, *, whole_image_fallback: bool = False) -> list[Face]:
        """All faces in one image, largest first. Raises `ml.ImageError` for unusable input. A `Photo`
        decoded reduced is read as it is, and its faces given in pixels of its original."""
        return self.predict_many([source], whole_image_fallback=whole_image_fallback)[0]

    def predict_many(
        self, sources: Sequence[ImageSource | Photo], *, whole_image_fallback: bool = False
    ) -> list[list[Face]]:
        """Faces for several images, each detected as `predict` would detect it alone, and all their faces
        through the model together."""
        photos = [decode_photo(source) for source in sources]
        images = [np.asarray(photo.image) for photo in photos]
        detections = self._detector.detect_many(images)
        chips, owners, meta = [], [], []
        for index, (rgb, found) in enumerate(zip(images, detections, strict=False)):
            faces = [(det, True) for det in found]
            if not found and whole_image_fallback:
                faces = [(self._detector.fallback_face(rgb), False)]
            for det, detected in faces:
                chips.append(self.chips_of(rgb, det.landmarks))
                owners.append(index)
                scale = photos[index].scale  # back to the original's pixels
                box = tuple(int(round(v * scale)) for v in det.box)
                meta.append((box, detected, det.confidence, det.landmarks, scale))
        results: list[list[Face]] = [[] for _ in images]
        if not chips:
            return results
        batch = {name: np.concatenate([c[name] for c in chips]) for name in self._inputs}
        age_probs, male = self.predict_chips(batch)
        # In the pixels the chip is cut from: how much detail it holds.
        eyes = [eye_distance(landmarks) for *_, landmarks, _ in meta]
        scales = self.interval_scale * range_widening(batch, eyes, self.small_faces, self.blurred_faces)
        ages, lows, highs = age_interval(age_probs, scales)
        for i, owner in enumerate(owners):
            box, detected, confidence, landmarks, scale = meta[i]
            is_male = bool(male[i] >= 0.5)
            results[owner].append(
                Face(
                    box=box,
                    detected=detected,
                    detection_confidence=round(float(confidence), 4),
                    age=round(float(ages[i]), 1),
                    age_low=float(lows[i]),
                    age_high=float(highs[i]),
                    gender="male" if is_male else "female",
                    gender_confidence=round(float(male[i] if is_male else 1.0 - male[i]), 4),
                    landmarks=tuple((round(float(x), 1), round(float(y), 1)) for x, y in landmarks * scale),
                )
            )
        return results

    def predict_chips(self, chips) -> tuple[np.ndarray, np.ndarray]:
        """Model only: aligned uint8 chips → (age distributions (N, 101), P(male) (N,)).

        `chips` is a dict of (N, S, S, 3) arrays, one per model input (`chips_of`); a plain array is taken
        as our chip framing and, for a fused model, the tight framing is re-cut from it.
        """
        if not isinstance(chips, dict):
            chips = {"image": np.asarray(chips)}
            for name, (geometry, size) in self._inputs.items():
                if name != "image":
                    chips[name] = reframe(chips["image"], size, geometry)
        ages, males = [], []
        for start in range(0, len(chips["image"]), MAX_BATCH):
            batch = {
                name: np.asarray(chips[name][start : start + MAX_BATCH], np.float32) for name in self._inputs
            }
            age, male = self._infer(batch)
            ages.append(age)
            males.append(male)
        return np.concatenate(ages), np.concatenate(males)
