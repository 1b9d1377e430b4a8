"""/healthz, for load balancers and monitoring: up while the database answers; "degraded" (still 200:
uploads are taken) while the broker does not; the work waiting."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from predictions.models import Prediction

pytestmark = pytest.mark.django_db


def test_healthy_service_reports_the_queue(client, astronaut_jpeg):
    sent = timezone.now() - timedelta(seconds=90)
    prediction = Prediction(original_name="a.jpg", session_key="k", created_at=sent, enqueued_at=sent)
    prediction.image.save("a.jpg", ContentFile(astronaut_jpeg), save=True)

    response = client.get("/healthz")

    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    health = response.json()
    assert (health["status"], health["database"], health["broker"]) == ("ok", "ok", "ok")
    assert health["queued"] == 1 and health["processing"] == 0 and health["stuck"] == 0
    assert 89 <= health["oldest_queued_seconds"] <= 120
    assert isinstance(health["broker_queue_length"], int)  # read from the real Redis


def test_broker_away_is_degraded_not_down(client, broker_away):
    response = client.get("/healthz")

    assert response.status_code == 200  # uploads are still taken: keep the site in rotation
    health = response.json()
    assert health["status"] == "degraded" and health["database"] == "ok"
    assert health["broker"].startswith("unreachable: ")
    broker_away()
    assert client.get("/healthz").json()["status"] == "ok"


def test_stuck_work_is_reported_as_such(client, astronaut_jpeg, settings):
    """A job whose worker stopped renewing its lease, and one never handed to the broker for longer than
    the sweep takes: "degraded", with how many (the sweep moves them; if they stay, it is not running)."""
    long_ago = timezone.now() - timedelta(seconds=settings.AGEGENDER_SWEEP_SECONDS + 60)
    for fields in (
        {"status": "processing", "lease_until": timezone.now() - timedelta(seconds=1)},
        {"created_at": long_ago},
        {"status": "processing", "lease_until": timezone.now() + timedelta(seconds=30)},  # working
        {"created_at": long_ago, "enqueued_at": long_ago},  # in the broker's queue
    ):
        prediction = Prediction(original_name="a.jpg", session_key="k", **fields)
        prediction.image.save("a.jpg", ContentFile(astronaut_jpeg), save=True)

    health = client.get("/healthz").json()

    assert health["status"] == "degraded" and health["stuck"] == 2, health
    assert (health["queued"], health["processing"]) == (2, 2)
