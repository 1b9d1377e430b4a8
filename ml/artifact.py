"""The saved model: `model.keras` plus `manifest.json` (name, version, input size, sha256, data, metrics)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

#: Model name in the manifest, by `TrainConfig.architecture`.
MODEL_NAMES = {"resnet": "agegender-resnet", "fused": "agegender-fused"}
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models" / "default"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_artifact(
    model,
    out: Path,
    *,
    config: dict,
    interval_scale: float,
    metrics: dict,
    training_data: dict,
    small_faces: dict | None = None,
    blurred_faces: dict | None = None,
) -> dict:
    import keras

    from ml.model import AGE_CLASSES

    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.keras"
    model.save(path)
    manifest = {
        "name": MODEL_NAMES[config.get("architecture", "resnet")],
        "version": config.get("version", "0"),
        "file": path.name,
        "sha256": sha256(path),
        "size_bytes": path.stat().st_size,
        "input_size": config["input_size"],
        # each model input and the framing (`ml.alignment.GEOMETRIES`) of the chip it takes
        "inputs": {
            tensor.name: {
                "geometry": input_geometry(tensor.name),
                "size": tensor.shape[1],
            }
            for tensor in model.inputs
        },
        "age_classes": AGE_CLASSES,
        "interval": {
            "low_quantile": 0.1,
            "high_quantile": 0.9,
            "scale": interval_scale,
            "target_coverage": 0.8,
            # widening factors of the range for faces small in the photo (`ml.calibration`)
            **({"small_faces": small_faces} if small_faces else {}),
            # and for blurred faces, by their chip's sharpness (`ml.calibration.blurred_face_widening`)
            **({"blurred_faces": blurred_faces} if blurred_faces else {}),
        },
        "parameters": int(model.count_params()),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_data": training_data,
        "config": config,
        "metrics": metrics,
    }
    write_manifest(out, manifest)
    return manifest


def input_geometry(name: str) -> str:
    """The framing (`ml.alignment.GEOMETRIES`) of the chip a model input takes: "image" is our "chip"."""
    return "chip" if name == "image" else name


def write_manifest(model_dir: Path, manifest: dict) -> None:
    (Path(model_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))


def read_manifest(model_dir: Path) -> dict:
    manifest_path = model_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no manifest.json in {model_dir}: not a model folder")
    manifest = json.loads(manifest_path.read_text())
    path = model_dir / manifest["file"]
    if sha256(path) != manifest["sha256"]:
        raise ValueError(f"{path} does not match the sha256 in its manifest (corrupt or replaced file)")
    return manifest
