"""Median time from upload to "done" for one photo with one face, against a running service.

    make run                                   # in one terminal
    .venv/bin/python scripts/measure_latency.py --runs 10 [--url http://127.0.0.1:8000] [--photo x.jpg]

Each run uploads the photo through the real form (as a browser would), then polls the JSON status
endpoint every 50 ms until the job is finished. Runs one after another, so no job waits for another.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import requests


def astronaut_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def one_run(base: str, photo: bytes, name: str) -> tuple[float, dict]:
    session = requests.Session()
    session.get(f"{base}/", timeout=30).raise_for_status()
    token = session.cookies["csrftoken"]
    started = time.perf_counter()
    response = session.post(
        f"{base}/",
        files={"images": (name, photo, "image/jpeg")},
        data={"csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/"},
        allow_redirects=False,
        timeout=60,
    )
    if response.status_code != 302:
        raise SystemExit(f"upload failed: HTTP {response.status_code}\n{response.text[:500]}")
    status_url = f"{base}{response.headers['Location']}status/"
    while True:
        status = session.get(status_url, timeout=30).json()
        if status["finished"]:
            return time.perf_counter() - started, status
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--photo", help="a JPEG with one face (default: scikit-image's astronaut)")
    args = parser.parse_args()
    photo = Path(args.photo).read_bytes() if args.photo else astronaut_jpeg()
    name = Path(args.photo).name if args.photo else "astronaut.jpg"

    warmup, status = one_run(args.url, photo, name)  # the first job may still wait for the model to load
    print(f"warm-up: {warmup:.2f} s, {status['status']}, {status['face_count']} face(s)")
    times = []
    for index in range(args.runs):
        seconds, status = one_run(args.url, photo, name)
        if status["status"] != "done" or status["face_count"] != 1:
            print(f"run {index + 1}: {status['status']} with {status['face_count']} faces", file=sys.stderr)
        times.append(seconds)
        print(f"run {index + 1}: {seconds:.3f} s")
    print(
        f"upload → done, {len(times)} runs: median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s, max {max(times):.3f} s"
    )


if __name__ == "__main__":
    main()
