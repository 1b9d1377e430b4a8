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
    prediction = Prediction(
        original_name="a.jpg", session_key="k", created_at=timezone.now() - timedelta(seconds=90)
    )
    prediction.image.save("a.jpg", ContentFile(astronaut_jpeg), save=True)

    response = client.get("/healthz")

    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    health = response.json()
    assert (health["status"], health["database"], health["broker"]) == ("ok", "ok", "ok")
    assert health["queued"] == 1 and health["processing"] == 0
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
