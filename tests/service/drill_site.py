"""A whole site of real processes for the fault drills (`test_drills`): a private Redis on a free port,
a private PostgreSQL database (or cluster), a `celery worker` and one `celery beat` as subprocesses, with
short lease and sweep times. Photos are accepted through `services.prediction_create`, as the upload view
does, in a subprocess of their own; counts are read the same way. Nothing here touches the shared Redis
or PostgreSQL servers beyond creating and dropping one database."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

#: Short enough that a drill recovers in seconds: a lease renewed every second, a sweep every two.
TIMINGS = {
    "AGEGENDER_LEASE_SECONDS": "3",
    "AGEGENDER_SWEEP_SECONDS": "2",
    "AGEGENDER_SEND_GRACE_SECONDS": "2",
    "AGEGENDER_BROKER_RETRY_PAUSE": "1",
    "AGEGENDER_TASK_RETRY_DELAY": "1",
}

SUBMIT = """
import sys
import django
django.setup()
from django.core.files.uploadedfile import SimpleUploadedFile
from predictions import services
from predictions.uploads import check_image_upload
data = open(sys.argv[1], "rb").read()
for i in range(int(sys.argv[2])):
    upload = SimpleUploadedFile(f"drill-{i}.jpg", data, content_type="image/jpeg")
    checked = check_image_upload(upload)
    services.prediction_create(upload=upload, checked=checked, owner=None, session_key="drill")
"""

HEALTH = """
import django
django.setup()
from predictions.health import service_health
print(service_health(broker_url="redis://127.0.0.1:1/0", queue="none")["stuck"])
"""

COUNTS = """
SELECT p.status, count(f.id) FROM predictions_prediction p
LEFT JOIN predictions_face f ON f.prediction_id = p.id GROUP BY p.id, p.status
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


class Redis:
    """A private redis-server; `restart` kills it (-9) and starts it again on the same port."""

    def __init__(self, folder: Path, *, appendonly: bool = False) -> None:
        self.folder, self.port, self.appendonly = folder, free_port(), appendonly
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.folder)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self.answers, 20, "private Redis answering")

    def answers(self) -> bool:
        import redis

        try:
            return redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def stop(self, *, graceful: bool = False) -> None:
        """kill -9 (what it holds only in memory is lost), or TERM (it writes its append-only file out)."""
        if self.process and self.process.poll() is None:
            self.process.terminate() if graceful else self.process.kill()
            self.process.wait()

    def queue_length(self, queue: str) -> int:
        import redis

        return redis.Redis.from_url(self.url).llen(queue)


class Postgres:
    """A private database on the shared PostgreSQL server (created and dropped), or, with `cluster`, a
    private PostgreSQL cluster on a free port (initdb as the `postgres` user), which a drill may restart."""

    def __init__(self, folder: Path, *, cluster: bool = False) -> None:
        # The `postgres` user must reach it: not under pytest's private temporary folders.
        self.cluster = Path(tempfile.mkdtemp(prefix="agegender-drill-pg-")) if cluster else None
        self.name = f"drill_{uuid.uuid4().hex[:8]}"
        if self.cluster is None:
            self.port = 5432
            self._psql(f"CREATE DATABASE {self.name}")
        else:
            self.port = free_port()
            os.chown(self.cluster, *_postgres_ids())
            self._as_postgres(["initdb", "-D", str(self.cluster), "-A", "trust", "-U", "postgres"])
            self.start()
            self._psql(f"CREATE DATABASE {self.name}")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{self.name}"

    def _as_postgres(self, args: list[str]) -> None:
        result = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

    def _psql(self, sql: str) -> None:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-c", sql],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        log = self.cluster / "log"
        options = f"-p {self.port} -k {self.cluster} -c listen_addresses=127.0.0.1"
        self._as_postgres(["pg_ctl", "-D", str(self.cluster), "-l", str(log), "-o", options, "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(["pg_ctl", "-D", str(self.cluster), "-m", mode, "-w", "stop"])

    def drop(self) -> None:
        if self.cluster is None:
            self._psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        else:
            self.stop("immediate")
            shutil.rmtree(self.cluster, ignore_errors=True)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


class Site:
    """Worker and beat against the private Redis and database; photos in, counts out."""

    def __init__(self, folder: Path, redis: Redis, database: Postgres, photo: bytes) -> None:
        self.folder, self.redis, self.database = folder, redis, database
        self.queue = f"drill-{uuid.uuid4().hex[:8]}"
        self.photo = folder / "photo.jpg"
        self.photo.write_bytes(photo)
        self.env = {
            **os.environ,
            **TIMINGS,
            "DJANGO_SETTINGS_MODULE": "agegender_site.settings",
            "DATABASE_URL": database.url,
            "REDIS_URL": redis.url,
            "CELERY_BROKER_URL": redis.url,
            "AGEGENDER_QUEUE": self.queue,
            "AGEGENDER_VAR_DIR": str(folder / "var"),
            "AGEGENDER_UPLOADS_PER_HOUR": "0",
            "PYTHONPATH": str(ROOT),
        }
        self.worker: subprocess.Popen | None = None
        self.started: list[subprocess.Popen] = []
        self.workers_started = 0
        self._python(["manage.py", "migrate", "--noinput"])

    def _python(self, args: list[str]) -> str:
        result = subprocess.run([PY, *args], cwd=ROOT, env=self.env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    def _celery(self, *args: str, log: str) -> subprocess.Popen:
        with open(self.folder / log, "ab") as out:
            process = subprocess.Popen(
                [PY, "-m", "celery", "-A", "agegender_site.celery:app", *args, "--loglevel=INFO"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the drill kills one process, cleanup all
            )
        self.started.append(process)
        return process

    def start_worker(self) -> None:
        self.workers_started += 1
        log = f"worker-{self.workers_started}.log"
        name = f"--hostname=drill{self.workers_started}@%h"
        self.worker = self._celery("worker", "--concurrency=1", name, log=log)

    def start_beat(self) -> None:
        self._celery("beat", "--schedule", str(self.folder / "beat-schedule"), log="beat.log")

    def kill_worker(self) -> None:
        """kill -9 the worker's main process only, as an operator's drill would (its pool child is left
        to notice by itself)."""
        os.kill(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def submit(self, count: int) -> None:
        self._python(["-c", SUBMIT, str(self.photo), str(count)])

    def counts(self) -> dict:
        """Photos by status, and how many faces each photo done has (read from the database directly)."""
        import psycopg

        counts = dict.fromkeys(("queued", "processing", "done", "failed"), 0)
        faces = set()
        try:
            with psycopg.connect(
                self.database.url.replace("postgres://", "postgresql://"), connect_timeout=2
            ) as db:
                for status, count in db.execute(COUNTS).fetchall():
                    counts[status] += 1
                    faces.update([count] if status == "done" else [])
        except psycopg.OperationalError:
            return {**counts, "database": "away"}
        return {**counts, "faces_per_done": sorted(faces)}

    def stuck(self) -> int:
        """What /healthz calls stuck."""
        return int(self._python(["-c", HEALTH]).strip().splitlines()[-1])

    def wait_for(self, check, timeout: float, what: str) -> dict:
        """Poll the counts until `check(counts)`; the last counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if check(counts):
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s; counts {counts}")
            time.sleep(0.1)

    def close(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group: an orphaned pool child too
            process.wait()
