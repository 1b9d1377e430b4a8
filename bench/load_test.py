"""Load test of a running service: many visitors upload at once. Prints how fast uploads are taken, how
fast pages answer while the queue is long (the site must stay responsive however long it is), and how
long photos wait until they are read.

    AGEGENDER_UPLOADS_PER_HOUR=0 PORT=8000 make run      # in another shell (no hourly allowance)
    python bench/load_test.py --url http://127.0.0.1:8000 --visitors 8 --photos 5

Photos are made here (the astronaut portrait and a six-face 1600x1200 collage of it, scikit-image's
public-domain photo), so no dataset is needed. Figures are wall-clock seconds seen by the clients, and
the resident memory (RSS, MB) of the worker and of the web server, each with its child processes, before
and after the run and the most seen while it ran: the processes are found on this host by their command
line (a Celery worker; `runserver`, gunicorn or uvicorn), or named with `--worker-pid` / `--web-pid`.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import psutil
import requests
from PIL import Image

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
#: Each photo's status is asked as the results page's script asks it: after 0.7 s, then 1.3 times later
#: each time, at most every 4 s.
POLL_FIRST_S, POLL_GROWTH, POLL_MOST_S = 0.7, 1.3, 4.0


def photos() -> list[tuple[str, bytes]]:
    from skimage import data

    face = Image.fromarray(data.astronaut())
    group = Image.new("RGB", (1600, 1200), (200, 200, 200))
    for index in range(6):
        group.paste(face.resize((360, 360)), (100 + (index % 3) * 500, 150 + (index // 3) * 500))
    made = []
    for name, image in (("portrait.jpg", face), ("group.jpg", group)):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        made.append((name, buffer.getvalue()))
    return made


@dataclass
class Figures:
    uploads: list[float] = field(default_factory=list)  # seconds per upload request (all its photos)
    waits: list[float] = field(default_factory=list)  # seconds from the upload's answer to each photo done
    page: list[float] = field(default_factory=list)  # seconds per page or status answer while work waits
    queue: list[int] = field(default_factory=list)  # photos queued, as /healthz said
    served: list[tuple[str, str]] = field(default_factory=list)  # each photo's created_at, finished_at
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def visitor(
    url: str, count: int, made: list[tuple[str, bytes]], figures: Figures, start: threading.Event
) -> None:
    session = requests.Session()
    token = CSRF.search(session.get(f"{url}/", timeout=30).text).group(1)
    files = [
        ("images", (f"{i}-{made[i % len(made)][0]}", made[i % len(made)][1], "image/jpeg"))
        for i in range(count)
    ]
    start.wait()
    began = time.perf_counter()
    answer = session.post(
        f"{url}/", data={"csrfmiddlewaretoken": token}, files=files,
        headers={"Referer": f"{url}/", "Accept": "application/json"}, timeout=300,
    )  # fmt: skip
    uploaded = time.perf_counter()
    answer.raise_for_status()
    location = answer.json()["location"]
    ids = re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", requests.utils.unquote(location))
    pending = set(ids)
    with figures.lock:
        figures.uploads.append(uploaded - began)
    delay = POLL_FIRST_S
    while pending:
        time.sleep(delay)  # as the results page's script polls (static/agegender/app.js, `poll`)
        delay = min(delay * POLL_GROWTH, POLL_MOST_S)
        for prediction_id in list(pending):
            asked = time.perf_counter()
            status = session.get(f"{url}/p/{prediction_id}/status/", timeout=60).json()
            with figures.lock:
                figures.page.append(time.perf_counter() - asked)
            if status["finished"]:
                pending.discard(prediction_id)
                with figures.lock:
                    figures.waits.append(time.perf_counter() - uploaded)
                    figures.failed += status["status"] == "failed"
                    figures.served.append((status["created_at"], status["finished_at"]))


def prober(url: str, figures: Figures, stop: threading.Event, memory: MemoryWatch) -> None:
    """A newcomer opening the upload page and the health check while the others' photos wait."""
    while not stop.is_set():
        memory.sample()
        for path in ("/", "/healthz"):
            asked = time.perf_counter()
            answer = requests.get(f"{url}{path}", timeout=60)
            with figures.lock:
                figures.page.append(time.perf_counter() - asked)
                if path == "/healthz":
                    figures.queue.append(answer.json().get("queued", 0))
        stop.wait(0.5)


def _matches(process: psutil.Process, role: str) -> bool:
    try:
        line = " ".join(process.cmdline())
    except (psutil.Error, OSError):
        return False
    if role == "worker":
        return "celery" in line and " worker" in line
    return any(word in line for word in ("runserver", "gunicorn", "uvicorn"))


def find_processes(role: str, pid: int | None) -> list[psutil.Process]:
    """The `role` ("worker" or "web") server processes: the named one, else every top one whose command
    line matches (its children are counted with it)."""
    if pid:
        return [psutil.Process(pid)]
    found = [p for p in psutil.process_iter() if _matches(p, role)]
    tops = {p.pid for p in found}
    return [p for p in found if p.ppid() not in tops]


def rss_mb(processes: list[psutil.Process]) -> float | None:
    """Resident memory of these processes and all their children, MB (None: none found)."""
    total, seen = 0, False
    for process in processes:
        try:
            family = [process, *process.children(recursive=True)]
        except psutil.Error:
            continue
        for member in family:
            try:
                total += member.memory_info().rss
                seen = True
            except psutil.Error:
                pass
    return total / 2**20 if seen else None


class MemoryWatch:
    """RSS of the worker and of the web server: before, the most seen while sampled, and after."""

    def __init__(self, worker_pid: int | None, web_pid: int | None) -> None:
        self.processes = {
            role: find_processes(role, pid) for role, pid in (("worker", worker_pid), ("web", web_pid))
        }
        self.before = {role: rss_mb(found) for role, found in self.processes.items()}
        self.peak = dict(self.before)
        self.after: dict[str, float | None] = {}

    def sample(self) -> None:
        for role, found in self.processes.items():
            now = rss_mb(found)
            if now is not None:
                self.peak[role] = max(now, self.peak[role] or 0.0)

    def finish(self) -> None:
        self.after = {role: rss_mb(found) for role, found in self.processes.items()}
        self.sample()

    def lines(self) -> list[str]:
        def mb(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}"

        return [
            f"{role} RSS (MB, with children): before {mb(self.before[role])} · peak {mb(self.peak[role])} · "
            f"after {mb(self.after.get(role))}"
            + ("" if self.processes[role] else f"  (no such process found; name it with --{role}-pid)")
            for role in self.processes
        ]


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95, p99 = (ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] for q in (0.95, 0.99))
    return f"median {statistics.median(ordered):.3f} · p95 {p95:.3f} · p99 {p99:.3f} · max {ordered[-1]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--visitors", type=int, default=8, help="visitors uploading at the same moment")
    parser.add_argument("--photos", type=int, default=5, help="photos in each visitor's upload")
    parser.add_argument("--worker-pid", type=int, default=None, help="the Celery worker's main process")
    parser.add_argument("--web-pid", type=int, default=None, help="the web server's main process")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    made = photos()
    figures, start, stop = Figures(), threading.Event(), threading.Event()
    memory = MemoryWatch(args.worker_pid, args.web_pid)
    load_before = os.getloadavg()
    threads = [
        threading.Thread(target=visitor, args=(url, args.photos, made, figures, start))
        for _ in range(args.visitors)
    ]
    for thread in threads:
        thread.start()
    watcher = threading.Thread(target=prober, args=(url, figures, stop, memory))
    began = time.perf_counter()
    start.set()
    watcher.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    stop.set()
    watcher.join()
    memory.finish()

    total = args.visitors * args.photos
    print(
        f"{args.visitors} visitors × {args.photos} photos = {total} photos "
        "(portrait 512², group 1600×1200, alternating)"
    )
    print(f"upload request (s):          {spread(figures.uploads)}")
    print(
        f"page/status answer (s):      {spread(figures.page)}  "
        f"({len(figures.page)} requests while work waited)"
    )
    print(f"upload answered → done (s):  {spread(figures.waits)}")
    print(f"all done after {elapsed:.1f} s (as the visitors' polls saw it); failed {figures.failed}; "
          f"queue at most {max(figures.queue, default=0)} photos")  # fmt: skip
    if figures.served:  # the site's own clock: from the first photo stored to the last one read
        first = min(datetime.fromisoformat(created) for created, _ in figures.served)
        last = max(datetime.fromisoformat(finished) for _, finished in figures.served)
        span, count = (last - first).total_seconds(), len(figures.served)
        print(f"read by the site: {count} photos in {span:.1f} s, {count / span:.2f} photos/s")
    for line in memory.lines():
        print(line)
    loads = " → ".join(", ".join(f"{v:.1f}" for v in load) for load in (load_before, os.getloadavg()))
    print(f"load average (1, 5, 15 min) before → after: {loads} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
