"""Peak memory of a worker process reading the largest photos the site accepts (WebP and AVIF at their
lower limit), each in a fresh process as a worker's job would read it (`worker.tasks._run`'s one
decode, the engine, the renditions).

    .venv/bin/python bench/worker_memory.py [--side 7000]
    .venv/bin/python bench/worker_memory.py --jobs 1000

Prints, per photo, the process's resident memory once the model is loaded (and its peak while loading),
and its peak while reading the photo (Linux: the high-water mark is reset after the load).

`--jobs N`: one process reads N photos in turn as a worker's jobs do, of 24 sizes and shapes (320 to
4032 px, portrait, landscape and square, one to six faces: the detector keeps a network sized for each
shape it meets lately, `ml.proposals.SIZED_KEPT`), and prints its resident memory every 100 jobs: a
worker's memory must stay flat however many jobs it reads."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

JOB = """
import io, json, sys, time
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
sys.path.insert(0, {root!r})
import os; os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agegender_site.settings")
import django; django.setup()
from ml.images import decode_photo
from worker.images import WORK_MAX_SIDE, renditions
from worker.model import get_predictor, return_large_blocks_to_the_system
return_large_blocks_to_the_system()  # as `worker.tasks` does
predictor = get_predictor()
loading_peak, loaded = status("VmHWM"), status("VmRSS")
from skimage import data as samples  # a first, small job: the detector's graphs are traced once
predictor.predict(decode_photo(samples.astronaut(), max_side=WORK_MAX_SIDE))
warm = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM
data = open(sys.argv[1], "rb").read()
started = time.perf_counter()
photo = decode_photo(data, max_side=WORK_MAX_SIDE)
del data
faces = predictor.predict(photo)
renditions(photo)
print(json.dumps({{"loaded_mb": loaded, "loading_peak_mb": loading_peak, "warm_mb": warm,
                  "peak_mb": status("VmHWM"), "faces": len(faces),
                  "seconds": round(time.perf_counter() - started, 1)}}))
"""


JOBS = """
import io, json, sys, time
sys.path.insert(0, {root!r})
import os; os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agegender_site.settings")
import django; django.setup()
from PIL import Image
from skimage import data as samples
from ml.images import decode_photo
from worker.images import WORK_MAX_SIDE, renditions
from worker.model import get_predictor, return_large_blocks_to_the_system
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
return_large_blocks_to_the_system()
predictor = get_predictor()
face = Image.fromarray(samples.astronaut()).crop((110, 20, 340, 250))
photos = []
for width in (320, 640, 1024, 1600, 2400, 4032):
    for aspect in (0.75, 1.0, 1.333, 0.5625):
        height = round(width * aspect)
        canvas = Image.new("RGB", (width, height), (180, 170, 160))
        count = 1 + len(photos) % 6
        side = max(24, min(width, height) // (count + 1))
        for i in range(count):
            canvas.paste(face.resize((side, side)), (i * width // count, height // 3))
        buffer = io.BytesIO()
        canvas.save(buffer, format="JPEG", quality=85)
        photos.append(buffer.getvalue())
started = time.perf_counter()
for job in range({jobs}):
    photo = decode_photo(photos[job % len(photos)], max_side=WORK_MAX_SIDE)
    predictor.predict(photo)
    renditions(photo)
    if job == 9 or (job + 1) % 100 == 0:
        print(json.dumps({{"jobs": job + 1, "rss_mb": status("VmRSS"), "peak_mb": status("VmHWM"),
                          "seconds": round(time.perf_counter() - started, 1)}}), flush=True)
"""


def _jobs(count: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", JOBS.format(root=str(ROOT), jobs=count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    for line in process.stdout:
        figures = json.loads(line)
        print(
            f"after {figures['jobs']:5} jobs: {figures['rss_mb']} MB resident "
            f"(peak {figures['peak_mb']} MB), {figures['seconds']} s"
        )
    if process.wait():
        raise SystemExit(process.returncode)


def _photos(side: int, folder: Path) -> list[Path]:
    """The largest photo of each kind the site accepts: `side`×`side`, and WebP and AVIF (decoded only at
    full size, `ml.images.FULL_DECODE_FORMATS`) at the side of their lower limit."""
    import math

    import numpy as np
    import pillow_heif
    from PIL import Image
    from skimage import data

    sys.path.insert(0, str(ROOT))
    from ml.images import MAX_FULL_DECODE_PIXELS

    pillow_heif.register_heif_opener()
    full_side = min(side, math.isqrt(MAX_FULL_DECODE_PIXELS))
    face = Image.fromarray(data.astronaut())
    canvas = Image.new("RGB", (side, side), (200, 190, 180))
    canvas.paste(face.resize((side // 4, side // 4)), (side // 3, side // 3))
    noise = np.random.default_rng(0).integers(0, 40, (side, side, 3), dtype=np.uint8)
    noisy = Image.fromarray(np.clip(np.asarray(canvas, np.int16) + noise, 0, 255).astype(np.uint8))
    grey16 = Image.fromarray(np.asarray(noisy.convert("L"), np.uint16) * 257)  # a scanner's 16-bit grey
    paths = []
    for name, image, kind in (
        ("smooth.png", canvas, "PNG"),
        ("rgba.png", canvas.convert("RGBA"), "PNG"),
        ("grey16.png", grey16, "PNG"),
        ("noisy.jpg", noisy, "JPEG"),
        ("noisy.webp", noisy.resize((full_side, full_side)), "WEBP"),
        ("noisy.avif", noisy.resize((full_side, full_side)), "AVIF"),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format=kind, **({"quality": 90} if kind != "PNG" else {}))
        path = folder / name
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def main() -> None:
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=7000, help="photos side×side pixels (7000: 49 MP)")
    parser.add_argument("--jobs", type=int, default=0, help="N jobs of many sizes in one process instead")
    args = parser.parse_args()
    if args.jobs:
        _jobs(args.jobs)
        return
    with tempfile.TemporaryDirectory() as folder:
        for path in _photos(args.side, Path(folder)):
            result = subprocess.run(
                [sys.executable, "-c", JOB.format(root=str(ROOT)), str(path)],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            size_mb = path.stat().st_size / 1e6
            with Image.open(path) as image:
                width, height = image.size
            print(
                f"{path.name:11} {width}x{height} {size_mb:6.1f} MB: model loaded "
                f"{figures['loaded_mb']} MB (peak while loading {figures['loading_peak_mb']} MB), after a "
                f"first small photo {figures['warm_mb']} MB, "
                f"peak while reading the photo {figures['peak_mb']} MB, {figures['faces']} face(s), "
                f"{figures['seconds']} s"
            )


if __name__ == "__main__":
    main()
