"""One client may send so many photos an hour, counted in the real Redis across processes; a refused
batch is said clearly, stores nothing and is not counted; another address has its own allowance."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from predictions.models import Prediction
from tests.conftest import stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def limit_of_three(upload_allowance) -> None:
    upload_allowance(3)


def photos(jpeg: bytes, count: int) -> dict:
    return {"images": [SimpleUploadedFile(f"{i}.jpg", jpeg, content_type="image/jpeg") for i in range(count)]}


def test_a_client_over_its_hourly_allowance_is_refused_clearly(
    client, limit_of_three, private_media, astronaut_jpeg, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        assert client.post("/", photos(astronaut_jpeg, 2)).status_code == 302

    refused = client.post("/", photos(astronaut_jpeg, 2))

    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 3600
    page = refused.content.decode()
    assert "Too many photos from your address: at most 3 an hour, and 1 left this hour." in page
    assert Prediction.objects.count() == 2 and len(stored_files(private_media)) == 2
    scripted = client.post("/", photos(astronaut_jpeg, 2), headers={"Accept": "application/json"})
    assert scripted.status_code == 429 and scripted.json()["errors"][0].startswith("Too many photos")
    with django_capture_on_commit_callbacks():  # the refused batches were not counted: one more fits
        assert client.post("/", photos(astronaut_jpeg, 1)).status_code == 302
    assert client.post("/", photos(astronaut_jpeg, 1)).status_code == 429


def test_each_address_has_its_own_allowance_and_proxies_are_trusted_only_when_said(
    client, settings, limit_of_three, astronaut_jpeg, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        assert client.post("/", photos(astronaut_jpeg, 3), REMOTE_ADDR="10.0.0.1").status_code == 302
        assert client.post("/", photos(astronaut_jpeg, 3), REMOTE_ADDR="10.0.0.2").status_code == 302
        # Without trusted proxies a forged X-Forwarded-For changes nothing ...
        forged = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.9"}
        assert client.post("/", photos(astronaut_jpeg, 1), **forged).status_code == 429
        # ... behind one trusted proxy, the address it saw is the client's.
        settings.AGEGENDER_TRUSTED_PROXIES = 1
        proxied = {"REMOTE_ADDR": "10.9.9.9", "HTTP_X_FORWARDED_FOR": "198.51.100.7, 10.0.0.1"}
        assert client.post("/", photos(astronaut_jpeg, 1), **proxied).status_code == 429  # 10.0.0.1 again
        proxied["HTTP_X_FORWARDED_FOR"] = "10.0.0.3"
        assert client.post("/", photos(astronaut_jpeg, 1), **proxied).status_code == 302


def test_without_redis_uploads_are_not_counted_but_still_taken(
    client, settings, limit_of_three, astronaut_jpeg, django_capture_on_commit_callbacks
):
    import socket

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        settings.REDIS_URL = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    with django_capture_on_commit_callbacks():
        assert client.post("/", photos(astronaut_jpeg, 4)).status_code == 302


def test_refused_files_do_not_use_up_the_allowance(
    client, limit_of_three, private_media, astronaut_jpeg, django_capture_on_commit_callbacks
):
    not_a_photo = SimpleUploadedFile("notes.jpg", b"not an image at all", content_type="image/jpeg")
    batch = photos(astronaut_jpeg, 1)["images"] + [not_a_photo] * 3
    with django_capture_on_commit_callbacks():
        assert client.post("/", {"images": batch}).status_code == 302  # one photo counted, not four
        assert client.post("/", photos(astronaut_jpeg, 2)).status_code == 302
    assert Prediction.objects.count() == 3
    assert "and 0 left this hour" in client.post("/", photos(astronaut_jpeg, 1)).content.decode()


def test_the_allowance_counts_pixels_too_and_says_so(
    client, upload_allowance, private_media, astronaut_jpeg, django_capture_on_commit_callbacks
):
    upload_allowance(100, megapixels=1)  # the astronaut is 512×512: three fit in a megapixel, four do not
    with django_capture_on_commit_callbacks():
        assert client.post("/", photos(astronaut_jpeg, 3)).status_code == 302

    refused = client.post("/", photos(astronaut_jpeg, 1))

    assert refused.status_code == 429
    assert (
        "Too many pixels from your address: at most 1 megapixels an hour, and 0 left this hour; "
        "these photos have 1. Send smaller photos, or nothing was uploaded"
    ) in refused.content.decode()
    assert Prediction.objects.count() == 3 and len(stored_files(private_media)) == 3


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_one_upload_holds_so_many_pixels_and_the_photos_past_that_are_refused_unread(
    client, settings, private_media, django_capture_on_commit_callbacks, monkeypatch, fmt
):
    import io

    from PIL import Image, ImageFile
    from skimage import data

    settings.AGEGENDER_MAX_UPLOAD_PIXELS = 600_000  # two 512×512 photos fit, not three
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format=fmt)
    extension = fmt.lower()
    sent = [SimpleUploadedFile(f"{i}.{extension}", buffer.getvalue()) for i in range(3)]
    decoded = set()
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(
        ImageFile.ImageFile, "load", lambda self: decoded.add(self.filename) or real_load(self)
    )
    with django_capture_on_commit_callbacks():
        response = client.post("/", {"images": sent}, follow=True)

    assert Prediction.objects.count() == 2 and len(decoded) == 2  # the third was never decoded
    page = response.content.decode()
    assert (
        f"2.{extension}: One upload may hold 0.6 megapixels in all, and this 512×512 photo goes past" in page
    )


def test_twenty_uploads_at_once_with_ten_left_let_exactly_ten_through(upload_allowance, settings):
    """The real Redis, twenty processes released together: the check and the count are one step."""
    import multiprocessing

    from predictions import ratelimit

    upload_allowance(10)
    start = multiprocessing.get_context("spawn")
    barrier = start.Barrier(20)
    results = start.Queue()
    from tests.service.allowance_race import take_when_all_are_ready

    args = (settings.REDIS_URL, settings.AGEGENDER_QUEUE, 10, barrier, results)
    processes = [start.Process(target=take_when_all_are_ready, args=args) for _ in range(20)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=60)

    assert sorted(outcomes) == [False] * 10 + [True] * 10
    refused = ratelimit.take("198.51.100.20", photos=1)
    assert (
        isinstance(refused, ratelimit.Refused)
        and refused.photos_left == 0
        and 0 < refused.retry_after <= 3600
    )


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_upload_requests_with_ten_left_store_exactly_ten(
    live_server, upload_allowance, private_media, astronaut_jpeg
):
    """Through the real web stack: twenty requests sent at once from threads, ten photos left."""
    import threading
    import urllib.request
    import uuid

    import redis
    from django.conf import settings

    upload_allowance(10)
    with urllib.request.urlopen(live_server.url + "/") as page:  # the CSRF cookie, as a browser gets it
        token = page.headers["Set-Cookie"].split("csrftoken=")[1].split(";")[0]
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def send() -> None:
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="me.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode()
            + astronaut_jpeg
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            live_server.url + "/",
            data=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Accept": "application/json",
                "Cookie": f"csrftoken={token}",
                "X-CSRFToken": token,
            },
        )
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as refused:
            statuses.append(refused.code)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(settings.AGEGENDER_QUEUE)  # no worker reads it

    assert sorted(statuses) == [200] * 10 + [429] * 10
    assert Prediction.objects.count() == 10 and len(stored_files(private_media)) == 10


def test_login_throttling_gets_an_ip_address_or_none_never_a_placeholder(rf, settings):
    """django-axes stores the address in an IP column that PostgreSQL checks: "unknown" would break
    every login without an address (a test client's, a management command's)."""
    from predictions.ratelimit import login_client_address

    settings.AGEGENDER_TRUSTED_PROXIES = 1
    assert login_client_address(rf.get("/", REMOTE_ADDR="10.0.0.7")) == "10.0.0.7"
    assert login_client_address(rf.get("/", HTTP_X_FORWARDED_FOR="1.2.3.4, 5.6.7.8")) == "5.6.7.8"
    assert login_client_address(rf.get("/", HTTP_X_FORWARDED_FOR="not-an-address")) is None
    request = rf.get("/")
    del request.META["REMOTE_ADDR"]
    assert login_client_address(request) is None
