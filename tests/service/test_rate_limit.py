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

    assert refused.status_code == 429
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
