"""After fitting: batch-norm statistics from clean faces, the gender expert, the range's width and its
widenings for small and blurred faces, validation metrics, and the artifact."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ml.training.chipsets import ChipSet, input_count, input_rows, load_sets, predict_chips
from ml.training.config import DEFAULT_DATA, TrainConfig

#: Clean training faces used to re-estimate batch-norm statistics after fitting.
RECALIBRATION_FACES = 8192
#: Training faces on which the gender expert's weight is fitted when no calibration faces are held out.
EXPERT_FIT_FACES = 4096
#: Training faces the range's widenings for small and blurred faces are fitted on (`fit_range_widenings`).
SMALL_FACE_FIT_FACES = 2048
#: Blend weights tried for the gender expert (0 = our head alone, 1 = the expert alone).
EXPERT_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))


def finish(
    model,
    train_set: ChipSet,
    calibration_set: ChipSet,
    val_set: ChipSet,
    config: TrainConfig,
    *,
    train_seconds: float,
) -> dict:
    """After fitting: batch-norm statistics from clean training faces; the gender expert and the range's
    width fitted on the calibration faces (without any, the expert on training faces and the range on
    validation); validation metrics; the artifact."""
    from ml.artifact import save_artifact
    from ml.training.calibration import evaluate_chips, fit_interval_scale

    out = Path(config.out)
    pick = recalibrate_on_training_faces(model, train_set, config)
    calibrated = len(calibration_set.ages) > 0
    expert = None
    if config.architecture == "fused" and config.gender_expert:
        fit_set = calibration_set if calibrated else train_set.take(np.sort(pick[:EXPERT_FIT_FACES]))
        model, expert = add_gender_expert(model, fit_set)
    val_probs = predict_chips(model, val_set.inputs())
    scale_set = calibration_set if calibrated else val_set
    scale_probs = predict_chips(model, scale_set.inputs()) if calibrated else val_probs
    interval_scale = fit_interval_scale(scale_probs["age"], scale_set.ages, coverage=0.8)
    widening_faces = train_set.take(np.sort(pick[:SMALL_FACE_FIT_FACES]))
    small_faces, blurred_faces = fit_range_widenings(model, widening_faces)
    metrics = evaluate_chips(val_probs, val_set, interval_scale)
    metrics["small_faces"] = small_faces
    metrics["blurred_faces"] = blurred_faces
    metrics["training_seconds"] = round(train_seconds, 1)
    if expert:
        metrics["gender_expert"] = expert
    metrics["fitted_on"] = {
        "interval_scale": "calibration" if calibrated else "validation",
        "gender_expert": ("calibration" if calibrated else "training") if expert else None,
    }
    names = sorted(set(train_set.datasets) | set(val_set.datasets))
    manifest = save_artifact(
        model,
        out,
        config=asdict(config),
        interval_scale=interval_scale,
        small_faces=small_faces,
        blurred_faces=blurred_faces,
        metrics=metrics,
        training_data={
            name: {
                "train": int((train_set.datasets == name).sum()),
                "calibration": int((calibration_set.datasets == name).sum()),
                "validation": int((val_set.datasets == name).sum()),
            }
            for name in names
        },
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    summary = {"out": str(out), "sha256": manifest["sha256"], "validation": metrics["overall"]}
    print(json.dumps(summary), flush=True)
    return metrics


def recalibrate_on_training_faces(model, train_set: ChipSet, config: TrainConfig) -> np.ndarray:
    """`recalibrate_batchnorm` on `RECALIBRATION_FACES` clean training faces drawn with the run's seed;
    returns the draw (its order), whose head `finish` reuses.

    With `batchnorm_chips` "resampled" (the default) the faces are cut the v4 way
    (`ml.training.chips.resample_chips`: our framing a little sharper, the face framing blurrier than
    served), whose statistics read validation ages better than the served chips' (ml/MODEL_CARD.md).
    Where the training set holds no resampled chips (a GPU machine given served chips only), the served
    ones are used."""
    pick = np.random.default_rng(config.seed).permutation(len(train_set.chips))[:RECALIBRATION_FACES]
    faces = train_set.take(np.sort(pick))
    resampled = config.batchnorm_chips == "resampled" and faces.resampled is not None
    if config.batchnorm_chips == "resampled" and not resampled:
        print("batch norm: no resampled chips here, statistics from the served chips", flush=True)
    recalibrate_batchnorm(model, faces.inputs(resampled=resampled), seed=config.seed)
    return pick


def recalibrate_batchnorm(model, chips, batch_size: int = 128, seed: int = 0) -> None:
    """Re-estimate batch-norm statistics on clean (unaugmented) faces, in place.

    Training ends with moving averages taken from augmented batches under a still-moving network; a
    cumulative average over clean training chips with the final weights matches what inference sees.
    `chips` is the model's input: an array, or a dict of arrays for a fused model (nested parts included).
    """
    import keras

    norms = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    order = np.random.default_rng(seed).permutation(input_count(chips))
    for step, start in enumerate(range(0, len(order), batch_size)):
        for layer in norms:
            layer.momentum = step / (step + 1.0)  # running mean of the batch statistics
        model(input_rows(chips, np.sort(order[start : start + batch_size])), training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def add_gender_expert(model, fit_set: ChipSet):
    """`model` with the original Cydral gender network blended in, the weight fitted on `fit_set`.

    The weight minimises the log loss of P(male) on these faces (calibration faces where some are held
    out, else training faces, on which our head is over-confident and so gets more weight than held-out
    faces would give it), averaged over the predictor's test-time views exactly as served. Returns the
    new model and a summary for the metrics.
    """
    from ml.model import TTA_VIEWS, with_gender_expert
    from ml.training.cydral import bundled_onnx, port

    expert = port(bundled_onnx("gender"), "cydral_gender_expert")
    ours = []
    for start in range(0, len(fit_set.ages), 128):
        views = _views(fit_set.inputs(slice(start, start + 128)))
        ours.append(np.asarray(model.predict_on_batch(views)["gender"]).reshape(TTA_VIEWS, -1))
    ours_male = np.clip(np.concatenate(ours, axis=1), 1e-6, 1 - 1e-6)
    ours_logit = np.log(ours_male) - np.log1p(-ours_male)
    theirs_logit = expert_logit_views(expert, fit_set)
    truth = fit_set.males.astype(np.float64)
    table = []
    for weight in EXPERT_WEIGHTS:
        male = (1 / (1 + np.exp(-((1 - weight) * ours_logit + weight * theirs_logit)))).mean(axis=0)
        male = np.clip(male, 1e-6, 1 - 1e-6)
        loss = -np.mean(truth * np.log(male) + (1 - truth) * np.log1p(-male))
        accuracy = float(((male >= 0.5) == (truth >= 0.5)).mean())
        table.append((weight, float(loss), accuracy))
        print(f"gender expert weight {weight:.2f}: log loss {loss:.4f}, accuracy {accuracy:.4f}", flush=True)
    weight, loss, accuracy = min(table, key=lambda row: row[1])
    print(f"gender expert: weight {weight} fitted on {len(truth)} faces", flush=True)
    summary = {
        "weight": weight,
        "fitted_on_faces": len(truth),
        "log_loss": round(loss, 4),
        "accuracy": round(accuracy, 4),
        "by_weight": [
            {"weight": w, "log_loss": round(row_loss, 4), "accuracy": round(row_accuracy, 4)}
            for w, row_loss, row_accuracy in table
        ],
    }
    return with_gender_expert(model, expert, weight), summary


def expert_logit_views(expert, faces: ChipSet) -> np.ndarray:
    """The untouched Cydral gender network's logit of male over female, (TTA_VIEWS, N): each face in each
    of the predictor's test-time views, read as the blended model reads it (`ml.model.expert_logits`)."""
    import keras

    from ml.model import TTA_VIEWS, expert_logits

    face = keras.Input(faces.faces.shape[1:], name="face")
    branch = keras.Model(face, expert_logits(expert, face))
    out = []
    for start in range(0, len(faces.ages), 128):
        logits = np.asarray(branch.predict_on_batch(_views(faces.inputs(slice(start, start + 128)))["face"]))
        out.append((logits[:, 1] - logits[:, 0]).reshape(TTA_VIEWS, -1))
    return np.concatenate(out, axis=1)


def _views(chips: dict) -> dict:
    """`ml.model.test_time_views` of a dict of arrays, as NumPy arrays."""
    from ml.model import test_time_views

    return {name: np.asarray(value) for name, value in test_time_views(chips).items()}


def fit_range_widenings(model, faces: ChipSet) -> tuple[dict, dict]:
    """The range's widening factors for faces small in the photo (`fit_small_face_widening`) and for
    blurred faces (`fit_blurred_face_widening`, by the sharpness of the face-framing chip, our chip for a
    model without one; both `ml.training.calibration`), fitted on these training faces made small
    (`ml.alignment.as_if_small`) or blurred (`ml.alignment.as_if_blurred`) as the alignment would see
    them, each input in its own framing. Both compare with the faces as they are, predicted once."""
    from ml.alignment import as_if_blurred, as_if_small, native_eye_distance
    from ml.artifact import input_geometry
    from ml.calibration import chip_sharpness
    from ml.training.calibration import fit_blurred_face_widening, fit_small_face_widening

    stored = {"image": faces.chips} if faces.faces is None else {"image": faces.chips, "face": faces.faces}
    measured = "image" if faces.faces is None else "face"

    def ages_of(inputs: dict) -> np.ndarray:
        inputs = {name: chips.astype(np.float32) for name, chips in inputs.items()}
        return predict_chips(model, inputs if faces.faces is not None else inputs["image"])["age"]

    clean = ages_of(stored)

    def spoilt_by(spoil):
        """`inputs(level)`: the faces spoilt at that level (None: as they are), the last level's kept;
        `predict(level)`: their age distributions."""
        last: dict = {}

        def inputs(level):
            if level is None:
                return stored
            if level not in last:
                last.clear()  # one level's chips at a time
                last[level] = {name: spoil(x, level, input_geometry(name)) for name, x in stored.items()}
            return last[level]

        return inputs, lambda level: clean if level is None else ages_of(inputs(level))

    _, predict_small = spoilt_by(as_if_small)
    small = fit_small_face_widening(predict_small, faces.ages)
    small["native_eye_px"] = round(
        max(native_eye_distance(chips.shape[1], input_geometry(name)) for name, chips in stored.items()), 2
    )
    print(f"small faces: range widened by {small}", flush=True)
    blurred_inputs, predict_blurred = spoilt_by(as_if_blurred)
    blurred = fit_blurred_face_widening(
        predict_blurred, lambda blur: chip_sharpness(blurred_inputs(blur)[measured]), faces.ages
    )
    blurred["input"] = measured
    print(f"blurred faces: range widened by {blurred}", flush=True)
    return small, blurred


def refit_small_faces(model_dir: str | Path, config: TrainConfig, version: str | None = None) -> dict:
    """Fit the range's widenings for small and for blurred faces (`fit_range_widenings`)
    of a finished model and write them into its manifest (and `metrics.json`), on the training faces
    `finish` would use; the model file, its weights and sha256 stay as they are.
    `python -m ml small-faces MODEL_DIR`."""
    import keras

    import ml.model  # noqa: F401  (registers the custom layers)
    from ml.artifact import read_manifest, write_manifest

    folder = Path(model_dir)
    manifest = read_manifest(folder)
    model = keras.models.load_model(folder / manifest["file"], compile=False)
    train_set, _, _ = load_sets(config, "face" in manifest.get("inputs", {}))
    pick = np.random.default_rng(config.seed).permutation(len(train_set.chips))[:SMALL_FACE_FIT_FACES]
    faces = train_set.take(np.sort(pick))
    small_faces, blurred_faces = fit_range_widenings(model, faces)
    tables = {"small_faces": small_faces, "blurred_faces": blurred_faces}
    manifest["interval"].update(tables)
    manifest.setdefault("metrics", {}).update(tables)
    if version:
        manifest["version"] = version
    write_manifest(folder, manifest)
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics.update(tables)
        metrics_path.write_text(json.dumps(metrics, indent=2))
    return tables


def run_small_faces(args: argparse.Namespace) -> int:
    config = TrainConfig(data=args.data or list(DEFAULT_DATA), cache_dir=args.cache_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    refit_small_faces(args.model_dir, config, args.version)
    return 0
