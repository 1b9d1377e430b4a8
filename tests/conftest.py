"""Shared fixtures: private storage per test, real images, the real model and a real Celery worker."""

from __future__ import annotations

import io
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def jpeg_bytes(array: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    """A real photo with exactly one (female) face."""
    from skimage import data

    return jpeg_bytes(data.astronaut())


#: The astronaut cut to portrait shape (384×512), her face whole: the upright photo of `sideways_heic`.
def astronaut_portrait() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, 64:448])


@pytest.fixture(scope="session")
def sideways_heic() -> bytes:
    """`astronaut_portrait` as an iPhone stores a photo taken sideways: HEIC, the pixels turned and the
    turn back recorded in the file (pillow-heif writes an EXIF orientation as HEIF's own rotation)."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise
    buffer = io.BytesIO()
    stored = Image.fromarray(astronaut_portrait()).transpose(Image.Transpose.ROTATE_90)
    stored.save(buffer, format="HEIF", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="session")
def two_faces_jpeg() -> bytes:
    """Two copies of the astronaut side by side: two faces."""
    from skimage import data

    image = data.astronaut()
    return jpeg_bytes(np.concatenate([image, image[:, ::-1]], axis=1))


@pytest.fixture(scope="session")
def face_grid_jpeg() -> bytes:
    """Eight copies of the astronaut's face in a 4×2 grid, 520×320 pixels: faces close together."""
    from PIL import Image
    from skimage import data

    face = Image.fromarray(data.astronaut()).crop((150, 40, 290, 220)).resize((110, 140))
    grid = Image.new("RGB", (4 * 130, 2 * 160), (230, 230, 225))
    for i in range(8):
        grid.paste(face, (10 + (i % 4) * 130, 10 + (i // 4) * 160))
    return jpeg_bytes(np.asarray(grid))


@pytest.fixture(scope="session")
def no_face_jpeg() -> bytes:
    """A smooth gradient: a valid photo with no face in it."""
    ramp = np.linspace(40, 220, 480, dtype=np.uint8)
    image = np.stack([np.tile(ramp, (360, 1))] * 3, axis=-1)
    return jpeg_bytes(image)


@pytest.fixture(autouse=True)
def no_upload_rate_limit(settings) -> None:
    """The suite uploads far more than a person would in an hour; tests of the limit turn it on."""
    settings.AGEGENDER_UPLOADS_PER_HOUR = 0
    settings.AGEGENDER_MEGAPIXELS_PER_HOUR = 0


@pytest.fixture
def upload_allowance(settings) -> Iterator[Callable[..., None]]:
    """Call the value to turn the hourly allowance on at that many photos (and megapixels). The counts go
    under a queue name of the test's own, and are removed from the real Redis afterwards."""
    import redis

    settings.AGEGENDER_QUEUE = queue = f"test-allowance-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(settings.REDIS_URL)  # now: a test may point REDIS_URL elsewhere

    def turn_on(photos: int, megapixels: int = 0) -> None:
        settings.AGEGENDER_UPLOADS_PER_HOUR = photos
        settings.AGEGENDER_MEGAPIXELS_PER_HOUR = megapixels

    yield turn_on
    for key in client.scan_iter(f"agegender:uploads:{queue}:*"):
        client.delete(key)


@pytest.fixture(autouse=True)
def private_media(settings, tmp_path: Path) -> Path:
    """Every test stores uploads in its own private folder (never the developer's var/media)."""
    media = tmp_path / "media"
    media.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media), "base_url": None},
        },
    }
    return media


def stored_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


# --- the real engine and a real worker ------------------------------------------------------------


@pytest.fixture(scope="session")
def predictor():
    """The real model, loaded once for the whole session (the in-process worker shares it)."""
    from worker.model import get_predictor

    return get_predictor()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, predictor) -> Iterator[object]:
    """A real Celery worker thread consuming from a private queue on the real Redis at REDIS_URL."""
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings

    from agegender_site.celery import app

    # A queue of its own, so that a worker of `make run` on the same Redis cannot take the test's jobs.
    previous, settings.AGEGENDER_QUEUE = settings.AGEGENDER_QUEUE, f"test-predictions-{uuid.uuid4().hex[:8]}"
    try:
        with (
            django_db_blocker.unblock(),
            start_worker(
                app,
                pool="solo",
                concurrency=1,
                queues=[settings.AGEGENDER_QUEUE],
                perform_ping_check=False,
                loglevel="WARNING",
                shutdown_timeout=60,
            ) as worker,
        ):
            yield worker
    finally:
        settings.AGEGENDER_QUEUE = previous


@pytest.fixture
def jobs_go_nowhere(settings) -> Iterator[str]:
    """Jobs sent during the test go to a queue of their own that no worker reads (the session's worker
    would otherwise take them, and race the test's own changes to the rows and their files); the
    queue's name is the fixture's value, and the queue is emptied afterwards."""
    import redis

    settings.AGEGENDER_QUEUE = f"test-nowhere-{uuid.uuid4().hex[:8]}"
    yield settings.AGEGENDER_QUEUE
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(settings.AGEGENDER_QUEUE)


def wait_until_finished(client, prediction_id: object, timeout: float = 240.0) -> dict:
    """Poll the JSON status endpoint the way the page does, until done or failed."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        response = client.get(f"/p/{prediction_id}/status/")
        assert response.status_code == 200, response.content
        payload = response.json()
        if not seen or seen[-1] != payload["status"]:
            seen.append(payload["status"])
        if payload["finished"]:
            payload["seen_statuses"] = seen
            return payload
        time.sleep(0.2)
    raise AssertionError(f"prediction {prediction_id} not finished after {timeout}s; statuses seen: {seen}")


def _point_celery_at(url: str) -> None:
    from agegender_site.celery import app

    # Celery keeps its connection pool and producers once made; drop them so that the next send
    # connects to `url` (internals, for this test only).
    app.conf.broker_url = url  # first, so that a pool made from here on (any thread) uses it
    app._pool = None
    app.amqp._producer_pool = None


def nowhere_broker_url() -> str:
    """A Redis URL on a local port free now: nothing listens there (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{probe.getsockname()[1]}/0"


@pytest.fixture(autouse=True)
def broker_reachable_again() -> None:
    """Every test starts with the web's memory of a broker that was away cleared (`services._send`)."""
    from predictions import services

    services._broker_away_until = 0.0


@pytest.fixture
def broker_away(settings) -> Iterator[Callable[[], None]]:
    """The broker is unreachable, for real: Celery is pointed at a local port where nothing listens
    (connection refused, as when Redis is down). Call the fixture's value to bring the broker back.
    Every send tries the broker (`AGEGENDER_BROKER_RETRY_PAUSE` 0) unless a test sets a pause."""
    from agegender_site.celery import app

    settings.AGEGENDER_BROKER_RETRY_PAUSE = 0
    good = app.conf.broker_url
    _point_celery_at(nowhere_broker_url())
    try:
        yield lambda: _point_celery_at(good)
    finally:
        _point_celery_at(good)


class Fault:
    """Makes the worker's step after the model (the photo's thumbnail and display copy) raise the first
    `times` times it runs, as a storage that cannot be written for a moment would."""

    def __init__(self, times: int, then=None) -> None:
        from worker.images import upright_size_and_thumbnail

        self.left, self.then, self.real, self.calls = times, then, upright_size_and_thumbnail, 0

    def __call__(self, data: bytes):
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            if self.then is not None:
                self.then()
            raise OSError("storage unavailable (injected by the test)")
        return self.real(data)
