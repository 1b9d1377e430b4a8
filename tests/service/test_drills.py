"""Fault drills with real processes (`drill_site`): whatever dies, every accepted photo reaches done or
failed by itself within two minutes of the fault ending; nothing is lost, nothing stuck, and no photo gets
its faces twice. Each drill prints its row: submitted, done, failed, stuck, seconds to recover (from the
end of the fault to the last photo finished)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.service.drill_site import Postgres, Redis, Site

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on the PATH"),
]

PHOTOS = 6
#: From the end of a fault: within this every photo is done or failed (the issue's bound).
RECOVERY = 120.0
#: A worker starting loads the model first, tens of seconds on a busy machine.
FIRST_START = 240.0


def _finished(counts: dict) -> int:
    return counts["done"] + counts["failed"]


@pytest.fixture(scope="module")
def photo() -> bytes:
    """The astronaut enlarged to 2048×2048 (one face): a job long enough to be caught running."""
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((2048, 2048)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def site(tmp_path, photo) -> Iterator[Site]:
    redis = Redis(tmp_path)
    database = Postgres(tmp_path)
    site = Site(tmp_path, redis, database, photo)
    try:
        yield site
    finally:
        site.close()
        redis.stop()
        database.drop()


def _ready(site: Site) -> None:
    """Worker and beat up, the model loaded: one photo read."""
    site.start_beat()
    site.start_worker()
    site.submit(1)
    site.wait_for(lambda c: c["done"] == 1, FIRST_START, "the first photo read")


def _recovered(site: Site, name: str, fault_ended: float, submitted: int) -> dict:
    counts = site.wait_for(lambda c: _finished(c) == submitted, RECOVERY + 60, f"{name}: all finished")
    seconds = time.monotonic() - fault_ended
    stuck = counts["queued"] + counts["processing"]
    row = f"| {name} | {submitted} | {counts['done']} | {counts['failed']} | {stuck} | {seconds:.0f} s |"
    print(f"\nDRILL {row}")
    if report := os.environ.get("AGEGENDER_DRILL_REPORT"):
        with open(report, "a") as out:
            out.write(row + "\n")
    assert counts["failed"] == 0 and stuck == 0, counts
    assert counts["faces_per_done"] == [1], counts  # the astronaut once per photo: no face twice
    assert site.stuck() == 0
    assert seconds < RECOVERY, f"{name}: recovered in {seconds:.0f} s"
    return counts


def _a_job_running(site: Site) -> None:
    site.wait_for(lambda c: c["processing"] == 1, 60, "a job running")


def test_worker_main_process_killed_mid_job_then_started_again(site):
    _ready(site)
    site.submit(PHOTOS)
    _a_job_running(site)

    site.kill_worker()
    site.start_worker()  # as supervisord does
    _recovered(site, "kill -9 the worker's main process mid-job, worker started again", time.monotonic(), 7)


def test_worker_killed_and_redis_restarted_before_it_returns(site):
    _ready(site)
    site.submit(PHOTOS)
    _a_job_running(site)

    site.kill_worker()
    site.redis.stop()  # kill -9: its queue (no persistence) is gone
    site.redis.start()
    site.start_worker()
    _recovered(site, "the same, and Redis restarted (no persistence) before the worker", time.monotonic(), 7)


def test_redis_restarted_with_jobs_in_its_queue(site):
    _ready(site)
    site.kill_worker()  # no worker: the jobs wait in Redis
    site.submit(PHOTOS)
    assert site.redis.queue_length(site.queue) >= PHOTOS

    site.redis.stop()
    site.redis.start()
    assert site.redis.queue_length(site.queue) == 0  # lost with Redis
    site.start_worker()
    _recovered(site, f"Redis restarted (no persistence) with {PHOTOS} jobs in its queue", time.monotonic(), 7)


def test_redis_with_append_only_file_keeps_its_queue_across_a_restart(tmp_path, photo):
    """`make run` and the compose file run Redis so; the sweep still re-sends only what nobody holds."""
    redis = Redis(tmp_path, appendonly=True)
    database = Postgres(tmp_path)
    site = Site(tmp_path, redis, database, photo)
    try:
        _ready(site)
        site.kill_worker()
        site.submit(PHOTOS)
        redis.stop(graceful=True)
        redis.start()
        assert redis.queue_length(site.queue) >= PHOTOS  # kept
        site.start_worker()
        _recovered(site, "Redis with its append-only file restarted with jobs queued", time.monotonic(), 7)
    finally:
        site.close()
        redis.stop()
        database.drop()


def test_redis_down_while_photos_are_accepted(site):
    _ready(site)
    site.redis.stop()
    site.submit(PHOTOS)  # accepted, their jobs unsent
    time.sleep(5)
    site.redis.start()
    _recovered(site, "Redis down while photos are accepted, empty queue", time.monotonic(), 7)


@pytest.mark.skipif(
    shutil.which("pg_ctl") is None or shutil.which("runuser") is None, reason="needs pg_ctl and runuser"
)
def test_postgres_restarted_mid_job(tmp_path, photo):
    """A private PostgreSQL cluster, stopped (its connections cut) while a job runs, started again."""
    redis = Redis(tmp_path)
    database = Postgres(tmp_path, cluster=True)
    site = Site(tmp_path, redis, database, photo)
    try:
        _ready(site)
        site.submit(PHOTOS)
        _a_job_running(site)
        database.stop()
        time.sleep(10)
        database.start()
        _recovered(site, "PostgreSQL restarted (down 10 s) mid-job", time.monotonic(), 7)
    finally:
        site.close()
        redis.stop()
        database.drop()
