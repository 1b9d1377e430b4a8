"""A job that fails for a reason other than the photo (storage or database away for a moment, a bug) is run
again by the worker, later; if it still fails, its sender may press "Try again". (A photo the engine cannot
read fails at once, for good, with no offer: `test_end_to_end`.)

The passing fault is injected into the real worker (an in-process thread of the test session) by making
one step of the job raise, as a storage outage would: everything else is real (Redis, Celery, the model).
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from predictions import jobs, services
from predictions.models import Prediction
from tests.conftest import Fault, _point_celery_at, nowhere_broker_url, retry_at_once, wait_until_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def quick_retries(monkeypatch, settings) -> None:
    retry_at_once(monkeypatch, settings, retries=1)


def upload(client, astronaut_jpeg: bytes) -> Prediction:
    response = client.post("/", {"images": [SimpleUploadedFile("me.jpg", astronaut_jpeg, "image/jpeg")]})
    assert response.status_code == 302, response.content.decode()
    return Prediction.objects.get()


def try_again_form(page: str) -> str | None:
    """The "Try again" form's opening tag as served, or None when the page has none."""
    match = re.search(r'<form [^>]*class="try-again"[^>]*>', page)
    return match.group(0) if match else None


def test_a_passing_fault_is_retried_by_the_worker_and_the_photo_is_read(
    client, celery_worker, quick_retries, monkeypatch, astronaut_jpeg
):
    fault = Fault(times=1)
    monkeypatch.setattr("worker.tasks.renditions", fault)

    prediction = upload(client, astronaut_jpeg)
    payload = wait_until_finished(client, prediction.id)

    assert payload["status"] == "done" and payload["face_count"] == 1, payload
    assert "failed" not in payload["seen_statuses"]  # the sender never saw the fault
    assert fault.calls == 2
    prediction.refresh_from_db()
    assert prediction.attempts == 2 and not prediction.retryable


def test_a_lasting_fault_fails_the_photo_and_its_sender_may_try_again(
    client, celery_worker, quick_retries, monkeypatch, astronaut_jpeg, private_media
):
    fault = Fault(times=2)  # the first run and its one retry
    monkeypatch.setattr("worker.tasks.renditions", fault)
    prediction = upload(client, astronaut_jpeg)

    payload = wait_until_finished(client, prediction.id)

    assert payload["status"] == "failed" and payload["retryable"] is True, payload
    assert payload["error"] == "Something went wrong while processing this photo."
    assert fault.calls == 2
    page = client.get(f"/p/{prediction.id}/").content.decode()
    form = try_again_form(page)
    assert form is not None and "hidden" not in form
    assert "This was our fault, not your photo" in page

    # Someone else cannot make it run again.
    other = client.__class__()
    assert other.post(f"/p/{prediction.id}/try-again/").status_code == 404

    response = client.post(f"/p/{prediction.id}/try-again/", {"next": f"/p/{prediction.id}/"})
    assert response.status_code == 302 and response["Location"] == f"/p/{prediction.id}/"
    payload = wait_until_finished(client, prediction.id)

    assert payload["status"] == "done" and payload["face_count"] == 1, payload
    assert payload["faces"][0]["gender"] == "female" and payload["retryable"] is False
    prediction.refresh_from_db()
    assert prediction.attempts == 3 and prediction.error == ""
    assert "hidden" in try_again_form(client.get(f"/p/{prediction.id}/").content.decode())


def test_a_retry_the_broker_cannot_take_is_sent_once_it_is_back(
    client, celery_worker, quick_retries, monkeypatch, astronaut_jpeg
):
    """Redis goes away just as the job fails: the retry cannot be handed over, and the row says so (queued,
    unsent), so that the outbox sends it once Redis is back."""
    from agegender_site.celery import app

    good, nowhere = app.conf.broker_url, nowhere_broker_url()
    fault = Fault(times=1, then=lambda: _point_celery_at(nowhere))  # Redis goes as the step fails
    monkeypatch.setattr("worker.tasks.renditions", fault)
    refused = threading.Event()  # set once the worker has marked the refused retry unsent
    mark_unsent = jobs.prediction_retry_not_sent

    def marked(**kwargs):
        mark_unsent(**kwargs)
        refused.set()

    monkeypatch.setattr(jobs, "prediction_retry_not_sent", marked)
    try:
        prediction = upload(client, astronaut_jpeg)
        assert refused.wait(timeout=120)
        prediction.refresh_from_db()
        assert (prediction.status, prediction.enqueued_at) == (Prediction.Status.QUEUED, None)
        assert prediction.attempts == 1 and fault.calls == 1
    finally:
        _point_celery_at(good)
    Prediction.objects.filter(pk=prediction.pk).update(created_at=timezone.now() - timedelta(seconds=30))

    assert services.predictions_send_unsent() == 1  # as beat does every minute
    payload = wait_until_finished(client, prediction.id)

    assert payload["status"] == "done" and payload["face_count"] == 1, payload
    assert fault.calls == 2


def test_a_job_that_cannot_reach_the_database_is_run_again_later(
    client, celery_worker, quick_retries, monkeypatch, astronaut_jpeg
):
    """The worker cannot even mark the job started (the database away for a moment): nothing can be
    recorded, so the broker keeps the job and runs it again; the sender sees the photo read."""
    from django.db import OperationalError

    real_start, calls = jobs.prediction_start, []

    def start_after_a_while(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise OperationalError("could not connect to server (injected by the test)")
        return real_start(**kwargs)

    monkeypatch.setattr(jobs, "prediction_start", start_after_a_while)
    prediction = upload(client, astronaut_jpeg)

    payload = wait_until_finished(client, prediction.id)

    assert payload["status"] == "done" and payload["face_count"] == 1, payload
    assert len(calls) == 2
    prediction.refresh_from_db()
    assert prediction.attempts == 1  # the first try never started
