"""Validation figures of several models on the cached chips: compare models without the detector.

    python bench/chip_eval.py ml/models/default runs/a runs/b [--cache-dir var/cache]
        [--ensemble] [--gender-by-bucket] [--gender-calibration] [--degrade blur|small|jpeg|grey|scan|cut]
        [--scan-scale N] [--groups] [--cydral]

For each model folder, the validation split's chips (the same cache `python -m ml train` reads, built on
first use) go through `ml.training.chipsets.predict_chips` (the served test-time views, gender expert
included) and `ml.training.calibration.evaluate_chips` with the model's own range width; one line per
model and dataset: age MAE, CS@5, gender accuracy (and how many faces that is), range coverage. These are
the figures each run's `metrics.json` holds, but measured again on today's chips, so that models trained
on older caches compare fairly. Since chip pipeline v5 the cached chips are the ones the service cuts, so
these figures come within about 0.1 year and a face or two of the end-to-end ones. `--ensemble` adds the
average of all the models' outputs (age distributions and P(male); its range width is the members' mean),
what a student distilled from them (`--teacher`) could at best reach. `--gender-by-bucket` adds, per
dataset and age bucket, the labels' share of men, the share the model calls men, and its errors each way.
Each face's range is widened as served for how blurred its chip is (`interval.blurred_faces`; the
widening for faces small in the photo needs the photo, so only end-to-end figures show it). `--degrade`
spoils every validation chip first, the way real uploads spoil faces, with PIL rather than the training
augmentation's own code (`ml.training.augment.RandomDegrade`): `blur` a Gaussian of radius 1.5 px,
`small` the chip shrunk to 24 px and enlarged back (a face of about 22 px in the photo), `jpeg`
re-encoded at quality 20, `grey` black and white, `scan` as a scanned old print (spoilt where the face
is `--scan-scale` times the chip's size, 4 by default) and `cut` cut by the photo's edge
(`ml.training.scans`). `--groups` adds, per dataset and age group of the scanned-photo
issue (0–2, 3–9, 10–19, 20–29, 30–44, 45+), the age MAE, mean signed error and gender accuracy;
`--cydral` adds the Cydral networks alone on the same face chips (our model's own pretrained parts,
the peer's networks). `--gender-calibration` adds, over both datasets,
how often a face shown 50–60%, 60–70%, … sure of its gender is right, and the expected calibration
error. End to end figures (detection included) come from `python -m ml evaluate`. Not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


#: Bins of the gender confidence shown (the larger of P(male) and P(female)) for `--gender-calibration`.
CONFIDENCE_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def gender_calibration(label: str, outputs: dict, val_set) -> None:
    """How often a face shown so sure of its gender is right, per confidence bin, over all validation
    faces; and the expected calibration error (the bins' gaps weighted by their faces)."""
    male = outputs["gender"].reshape(-1)
    confidence = np.maximum(male, 1.0 - male)
    right = (male >= 0.5) == (val_set.males >= 0.5)
    bins = np.digitize(confidence, CONFIDENCE_BINS[1:-1])
    print(f"{label} gender: {right.mean():.2%} right, mean confidence {confidence.mean():.2%}")
    error = 0.0
    for index, (low, high) in enumerate(zip(CONFIDENCE_BINS[:-1], CONFIDENCE_BINS[1:], strict=True)):
        inside = bins == index
        if inside.any():
            gap = abs(confidence[inside].mean() - right[inside].mean())
            error += gap * inside.mean()
            print(
                f"    {low:.0%}–{high:.0%} sure: {inside.sum():5d} faces, mean confidence "
                f"{confidence[inside].mean():.1%}, right {right[inside].mean():.1%}"
            )
    print(f"    expected calibration error {error:.2%}")


def report(label: str, outputs: dict, val_set, scale: float, buckets: np.ndarray | None) -> None:
    """One line per dataset; with `buckets` (each validation face's age bucket), men's share and the
    errors each way per bucket too."""
    from ml.training.calibration import evaluate_chips
    from ml.training.data import AGE_BUCKETS

    metrics = evaluate_chips(outputs, val_set, scale)
    called_male = outputs["gender"].reshape(-1) >= 0.5
    for name, entry in metrics["datasets"].items():
        right = round(entry["gender_accuracy"] * entry["count"])
        print(
            f"{label} {name}: MAE {entry['age_mae']:.2f}, CS@5 {entry['cs5']:.3f}, "
            f"gender {entry['gender_accuracy']:.2%} ({right} of {entry['count']}), "
            f"range coverage {entry['interval_coverage']:.1%}, width {entry['interval_width']:.1f}",
            flush=True,
        )
        if buckets is None:
            continue
        for bucket, _, _ in AGE_BUCKETS:
            inside = (val_set.datasets == name) & (buckets == bucket)
            male = val_set.males[inside] >= 0.5
            called = called_male[inside]
            print(
                f"    {bucket:>5}: {inside.sum():4d} faces, men {male.mean():.0%}, called men "
                f"{called.mean():.0%}; women called men {(~male & called).sum()}, men called women "
                f"{(male & ~called).sum()}",
                flush=True,
            )


def group_report(label: str, outputs: dict, val_set) -> None:
    """Per dataset and age group: faces, age MAE, mean signed error (+ reads too old), gender right."""
    from ml.calibration import expected_age
    from ml.training.scoring import AGE_GROUPS

    age = expected_age(outputs["age"])
    error = age - val_set.ages
    right = (outputs["gender"].reshape(-1) >= 0.5) == (val_set.males >= 0.5)
    for name in sorted(set(val_set.datasets)):
        cells = []
        for group, low, high in AGE_GROUPS:
            inside = (val_set.datasets == name) & (val_set.ages >= low) & (val_set.ages <= high)
            if inside.any():
                cells.append(
                    f"{group} n{inside.sum()} {np.abs(error[inside]).mean():.2f}/"
                    f"{error[inside].mean():+.2f}/{right[inside].mean():.0%}"
                )
        print(f"{label} {name} by group (MAE/signed/gender): " + " | ".join(cells), flush=True)


def cydral_outputs(inputs: dict) -> dict:
    """The untouched Cydral age and gender networks on the face chips: outputs shaped as our model's
    (an age distribution over 0..100 years, P(male))."""
    from ml.training.cydral import AGE_CLASS_YEARS
    from ml.training.stages import ported_network

    def softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    face = inputs["face"].astype(np.float32)
    age_logits = np.asarray(
        ported_network("age", "cydral_age").predict(face, batch_size=256, verbose=0)["logits"]
    )
    pooled = face.reshape(len(face), 32, 2, 32, 2, 3).mean(axis=(2, 4))
    gender = np.asarray(
        ported_network("gender", "cydral_gender").predict(pooled, batch_size=256, verbose=0)["logits"]
    )
    classes = softmax(age_logits)
    ages = np.zeros((len(face), 101), np.float32)  # class k's probability on its whole year (0.25 → 0)
    for k, year in enumerate(AGE_CLASS_YEARS):
        ages[:, int(year)] += classes[:, k]
    return {"age": ages, "gender": softmax(gender)[:, 1]}


def degrade(chips: np.ndarray, kind: str, framing: str = "image", scan_scale: int = 4) -> np.ndarray:
    """Each uint8-range chip of (N, S, S, 3) spoilt by `kind` (see the module's docstring); a scan is
    spoilt where the face is `scan_scale` times the chip's size."""
    import io

    from ml.training.scans import cut_chips, scan_chips

    if kind == "scan":
        return scan_chips(chips, scan_scale=scan_scale).astype(chips.dtype)
    if kind == "cut":  # the face framing shows our chip's middle enlarged about 1.6 times
        return cut_chips(chips, framing_scale=1.0 if framing == "image" else 1.609)

    from PIL import Image, ImageFilter

    out = np.empty_like(chips)
    for i, chip in enumerate(chips):
        image = Image.fromarray(np.clip(chip, 0, 255).astype(np.uint8))
        size = image.size
        if kind == "blur":
            image = image.filter(ImageFilter.GaussianBlur(1.5))
        elif kind == "small":
            image = image.resize((24, 24), Image.Resampling.BOX).resize(size, Image.Resampling.BILINEAR)
        elif kind == "jpeg":
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=20)
            image = Image.open(buffer).convert("RGB")
        elif kind == "grey":
            image = image.convert("L").convert("RGB")
        else:
            raise ValueError(f"unknown degradation {kind!r}")
        out[i] = np.asarray(image)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders (model.keras + manifest.json)")
    parser.add_argument("--cache-dir", default="var/cache")
    parser.add_argument("--ensemble", action="store_true", help="also the average of the models' outputs")
    parser.add_argument("--gender-by-bucket", action="store_true", help="also men's share and errors by age")
    parser.add_argument(
        "--degrade", choices=["blur", "small", "jpeg", "grey", "scan", "cut"], help="spoil the chips first"
    )
    parser.add_argument(
        "--scan-scale",
        type=int,
        default=4,
        help="with --degrade scan: the face's size in the spoilt print, in chips (2: as coarse, relative to"
        " the face, as a whole 200-px dataset photo spoilt end to end)",
    )
    parser.add_argument(
        "--groups", action="store_true", help="also MAE, signed error and gender by age group"
    )
    parser.add_argument("--cydral", action="store_true", help="also the Cydral networks alone")
    parser.add_argument(
        "--gender-calibration", action="store_true", help="also how often each gender confidence is right"
    )
    args = parser.parse_args()

    import keras

    import ml.model  # noqa: F401  (registers the custom layers)
    from ml.artifact import read_manifest
    from ml.calibration import range_widening
    from ml.training.chipsets import load_chips, predict_chips, split_chips
    from ml.training.config import TrainConfig
    from ml.training.data import age_bucket

    config = TrainConfig(cache_dir=args.cache_dir)
    _, val_set = split_chips(load_chips(config.data, config.input_size, config.cache_dir, faces=True))
    buckets = np.array([age_bucket(age) for age in val_set.ages]) if args.gender_by_bucket else None
    inputs = val_set.inputs()
    if args.degrade:
        inputs = {name: degrade(chips, args.degrade, name, args.scan_scale) for name, chips in inputs.items()}
    members, scales = [], []
    for folder in args.models:
        manifest = read_manifest(folder)  # checks the file against its sha256, as the predictor does
        model = keras.models.load_model(folder / manifest["file"], compile=False)
        outputs = predict_chips(model, inputs)
        interval = manifest["interval"]  # each face's range widened by blur as served (no photo: no size)
        scale = interval["scale"] * range_widening(inputs, None, None, interval.get("blurred_faces"))
        report(str(folder), outputs, val_set, scale, buckets)
        if args.groups:
            group_report(str(folder), outputs, val_set)
        if args.gender_calibration:
            gender_calibration(str(folder), outputs, val_set)
        members.append(outputs)
        scales.append(scale)
    if args.cydral:
        outputs = cydral_outputs(inputs)
        report("cydral", outputs, val_set, 1.0, buckets)
        if args.groups:
            group_report("cydral", outputs, val_set)
    if args.ensemble:
        average = {key: np.mean([outputs[key] for outputs in members], axis=0) for key in ("age", "gender")}
        report("ensemble", average, val_set, np.mean(scales, axis=0), buckets)


if __name__ == "__main__":
    main()
