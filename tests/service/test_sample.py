"""A visitor with no photo at hand tries the sample portrait: it is read exactly as an upload of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from predictions.models import Prediction
from tests.conftest import wait_until_finished

SAMPLE = Path(__file__).resolve().parents[2] / "static" / "agegender" / "sample-astronaut.jpg"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_sample_portrait_is_read_like_an_upload(client, celery_worker, private_media):
    assert "Try the sample portrait" in client.get("/").content.decode()

    response = client.post("/sample/")

    prediction = Prediction.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/p/{prediction.id}/"
    assert prediction.original_name == "sample – Eileen Collins, NASA.jpg" and prediction.session_key
    assert (private_media / prediction.image.name).read_bytes() == SAMPLE.read_bytes()
    status = wait_until_finished(client, prediction.id)
    assert status["status"] == "done" and status["face_count"] == 1
    face = status["faces"][0]
    assert face["gender"] == "female" and 25 <= face["age"] <= 60
    assert str(prediction.id) in client.get("/history/").content.decode()  # the visitor's own


@pytest.mark.django_db
def test_the_sample_is_asked_for_by_post_and_counts_against_the_allowance(client, upload_allowance):
    assert client.get("/sample/").status_code == 405
    upload_allowance(1)
    assert Client().post("/sample/").status_code == 302  # no job is sent: this test never commits
    refused = client.post("/sample/", REMOTE_ADDR="127.0.0.1", follow=True)
    assert "Too many photos from your address" in refused.content.decode()
    assert Prediction.objects.count() == 1
