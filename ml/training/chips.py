"""Aligned face chips for training, made by the same detector and aligner that serve predictions.

`build_cache(folder, size, cache_dir)` runs every labelled image of a folder through
`ml.images.load_image` → `FaceDetector` → `alignment.align` and stores the result as
`<cache_dir>/<dataset>-<size>.npz`: uint8 chips of `size` px in our framing, the tight "face" framing at
`FACE_SIZE` px (the fused model's second input), labels, a `detected` flag and the five landmarks each
face was aligned from. Both chips are aligned straight from the photo, exactly as `ml.Predictor.chips_of`
does in service; neither is resampled from another chip (up to v4 the training chips were, and differed
from the served ones: see `PIPELINE_VERSION`; `resampled_cache` cuts them that way again, from the stored
landmarks, as a training augmentation).
Images where no face is found are cropped as the service's `whole_image_fallback` does
(`FaceDetector.fallback_face`: a weak detection filling much of the frame, else the whole image) and flagged.
The cache is reused when it matches the folder's file list and the pipeline version.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

from ml.training.cydral import CHIP_SIZES
from ml.training.data import Sample, read_labels

#: Bumped whenever the cached chips change, so that old caches are rebuilt (the versions' history is in
#: ml/MODEL_CARD.md). v7: v6's chips, plus the five landmarks each face was aligned from.
PIPELINE_VERSION = "mtcnn1.0-align1.4-v7"
#: Where the chip builder's MTCNN gets its candidates (`ml.detection.PROPOSERS`).
DETECTOR_PROPOSER = "pyramid"
#: Side of the stored "face" framing: the input of the Cydral age network.
FACE_SIZE = CHIP_SIZES["age"]


_detector = None
BATCH = 16


def _partial(target: Path) -> Path:
    """Where a cache file is written before it replaces `target`: a name of this process's own, so that two
    runs building the same cache at once (two trainings started together) do not take each other's file."""
    return target.with_suffix(f".{os.getpid()}.tmp.npz")


def _chip_batch(args: tuple[list[str], int]) -> list[tuple[np.ndarray, np.ndarray, bool, np.ndarray]]:
    global _detector
    paths, size = args
    from ml.alignment import align
    from ml.detection import FaceDetector
    from ml.images import load_image

    if _detector is None:
        # MTCNN's own pyramid, as up to v7: the cached chips (and every model trained on them) stay valid.
        # On the training photos, tight crops, its faces and BlazeFace's differ by well under a pixel of
        # landmark (ml/MODEL_CARD.md, "Detector").
        _detector = FaceDetector(proposer=DETECTOR_PROPOSER)
    images = [np.asarray(load_image(path)) for path in paths]
    out = []
    for rgb, faces in zip(images, _detector.detect_many(images), strict=False):
        # no face: cropped as the service's whole_image_fallback does
        landmarks = faces[0].landmarks if faces else _detector.fallback_face(rgb).landmarks
        chip, face = align(rgb, landmarks, size), align(rgb, landmarks, FACE_SIZE, "face")
        out.append((chip, face, bool(faces), np.asarray(landmarks, dtype=np.float32)))
    return out


def _dims(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except OSError:
        return (0, 0)


def _fingerprint(samples: list[Sample], size: int) -> str:
    digest = hashlib.sha256(f"{PIPELINE_VERSION}:{size}".encode())
    for sample in samples:
        digest.update(f"{sample.path.name}:{sample.age}:{sample.gender};".encode())
    return digest.hexdigest()[:16]


def build_cache(folder: str | Path, size: int, cache_dir: str | Path, workers: int = 2) -> Path:
    """Path of the chip cache for `folder`, building it first where it is missing or stale.

    Where the folder itself is absent but its cache exists (a training machine that was given the cache
    only), the cache is used as it is.
    """
    folder, cache_dir = Path(folder), Path(cache_dir)
    target = cache_dir / f"{folder.name}-{size}.npz"
    if not (folder / "labels.csv").is_file() and target.is_file():
        print(f"[chips] {folder} is absent: using its cache {target} as it is", file=sys.stderr)
        return target
    samples = read_labels(folder)
    fingerprint = _fingerprint(samples, size)
    if target.is_file():
        with np.load(target) as cached:
            if str(cached["fingerprint"]) == fingerprint:
                return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    chips = np.zeros((len(samples), size, size, 3), dtype=np.uint8)
    faces = np.zeros((len(samples), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    detected = np.zeros(len(samples), dtype=bool)
    landmarks = np.zeros((len(samples), 5, 2), dtype=np.float32)
    started = time.time()
    # Jobs of BATCH photos keep the two worker processes busy (each photo is detected alone); ordered by
    # size, as when the detector batched them, so that the cache's order of work is unchanged.
    dims = [_dims(s.path) for s in samples]
    order = sorted(range(len(samples)), key=lambda i: (dims[i], i))
    jobs = [([str(samples[j].path) for j in order[k : k + BATCH]], size) for k in range(0, len(order), BATCH)]
    ctx = mp.get_context("spawn")
    done = 0
    with ctx.Pool(workers) as pool:
        for k, results in enumerate(pool.imap(_chip_batch, jobs)):
            for offset, (chip, face, found, points) in enumerate(results):
                i = order[k * BATCH + offset]
                chips[i], faces[i], detected[i], landmarks[i] = chip, face, found, points
            done += len(results)
            if done % 1008 < BATCH or done == len(samples):
                rate = done / (time.time() - started)
                print(
                    f"[chips] {folder.name}: {done}/{len(samples)} ({rate:.1f} img/s, "
                    f"{detected.sum() / done:.1%} detected)",
                    file=sys.stderr,
                    flush=True,
                )
    partial = _partial(target)
    np.savez(
        partial,
        chips=chips,
        faces=faces,
        files=np.array([s.path.name for s in samples]),
        ages=np.array([s.age for s in samples], dtype=np.int16),
        genders=np.array([s.gender == "male" for s in samples], dtype=np.uint8),
        detected=detected,
        landmarks=landmarks,
        fingerprint=np.array(fingerprint),
    )
    partial.replace(target)
    (cache_dir / f"{folder.name}-{size}.json").write_text(
        json.dumps(
            {"images": len(samples), "detected": float(detected.mean()), "seconds": time.time() - started}
        )
    )
    return target


#: `resampled_cache`'s chips are warped at this many times their size first, then shrunk (as up to v4).
RESAMPLE_FACTOR = 1.5


def resample_chips(rgb: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Both framings of a face cut as training chips were up to pipeline v4: our framing warped at
    `RESAMPLE_FACTOR` × `size` px and shrunk with Lanczos (a little sharper than `align` at `size`), and
    the face framing re-cut from that larger chip (the face enlarged a little: blurrier than served)."""
    from PIL import Image

    from ml.alignment import align, reframe

    large = align(rgb, landmarks, round(size * RESAMPLE_FACTOR))
    chip = np.asarray(Image.fromarray(large).resize((size, size), Image.Resampling.LANCZOS))
    return chip, reframe(large[None], FACE_SIZE, "face")[0]


def webp_bytes(chip: np.ndarray, quality: int) -> bytes:
    """`chip` (uint8 RGB) encoded as WebP at `quality`, with the slowest, best method (6)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, "WEBP", quality=quality, method=6)
    return buffer.getvalue()


def webp_decode(data: bytes) -> np.ndarray:
    """The uint8 RGB chip that `webp_bytes` encoded."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _webp_roundtrip_part(args: tuple[np.ndarray, int]) -> np.ndarray:
    chips, quality = args
    return np.stack([webp_decode(webp_bytes(chip, quality)) for chip in chips])


def webp_roundtrip(chips: np.ndarray, quality: int, workers: int = 2) -> np.ndarray:
    """Each chip after one trip through WebP at `quality`: what the fitting stages on a GPU machine
    trained on (`ml.training.remote` packs the training chips so), for `TrainConfig.train_webp`. About
    30 s for the 26,703 training faces' two framings on 2 cores."""
    parts = [(chips[k : k + 1024], quality) for k in range(0, len(chips), 1024)]
    with mp.get_context("spawn").Pool(workers) as pool:
        return np.concatenate(pool.map(_webp_roundtrip_part, parts)) if parts else chips.copy()


def _resample_batch(args: tuple[list[str], np.ndarray, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    from ml.images import load_image

    paths, landmarks, size = args
    pairs = zip(paths, landmarks, strict=True)
    return [resample_chips(np.asarray(load_image(path)), points, size) for path, points in pairs]


def resampled_cache(folder: str | Path, size: int, cache_dir: str | Path, workers: int = 2) -> Path:
    """Path of `<cache_dir>/<dataset>-<size>-resampled.npz`: every face of `build_cache`'s cache cut
    again by `resample_chips` from the landmarks stored there (no detection: 35 s for both datasets here),
    in the same order; built where missing or stale (made from another cache). A training augmentation
    (`TrainConfig.resampled_share`): what is served is always `align`'s chips."""
    folder, cache_dir = Path(folder), Path(cache_dir)
    source = build_cache(folder, size, cache_dir)
    with np.load(source) as cached:
        fingerprint, files, landmarks = str(cached["fingerprint"]), cached["files"], cached["landmarks"]
    target = cache_dir / f"{folder.name}-{size}-resampled.npz"
    if target.is_file():
        with np.load(target) as done:
            if str(done["fingerprint"]) == fingerprint:
                return target
    if not (folder / "labels.csv").is_file():
        raise FileNotFoundError(f"{folder}: the photos are needed to cut resampled chips")
    started = time.time()
    paths = [str(folder / name) for name in files]
    jobs = [(paths[k : k + 256], landmarks[k : k + 256], size) for k in range(0, len(paths), 256)]
    with mp.get_context("spawn").Pool(workers) as pool:
        results = [pair for batch in pool.imap(_resample_batch, jobs) for pair in batch]
    partial = _partial(target)
    np.savez(
        partial,
        chips=np.stack([chip for chip, _ in results]),
        faces=np.stack([face for _, face in results]),
        fingerprint=np.array(fingerprint),
    )
    partial.replace(target)
    print(f"[chips] {folder.name}: resampled chips in {time.time() - started:.0f} s", file=sys.stderr)
    return target


if __name__ == "__main__":
    for arg in sys.argv[2:]:
        print(build_cache(arg, int(sys.argv[1]), "var/cache"))
