"""While a photo waits in the queue, its page says how many photos are ahead of it, and counts down."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from predictions.models import Prediction
from predictions.signals import VISITOR_KEY


def queued(jpeg: bytes, name: str, *, seconds_ago: float, session_key: str = "visitor") -> Prediction:
    """A queued row made directly, as if its job had been sent (none is: nothing will read it)."""
    created = timezone.now() - timedelta(seconds=seconds_ago)
    prediction = Prediction(
        original_name=name, session_key=session_key, created_at=created, enqueued_at=created
    )
    prediction.image.save(name, ContentFile(jpeg), save=True)
    return prediction


def visitor_client(client):
    session = client.session
    session[VISITOR_KEY] = "visitor"
    session.save()
    return client


@pytest.mark.django_db
def test_the_status_says_how_many_photos_are_ahead(client, astronaut_jpeg):
    first = queued(astronaut_jpeg, "1.jpg", seconds_ago=30, session_key="someone-else")
    second = queued(astronaut_jpeg, "2.jpg", seconds_ago=20)
    third = queued(astronaut_jpeg, "3.jpg", seconds_ago=10)
    client = visitor_client(client)

    def ahead(prediction: Prediction) -> int | None:
        return client.get(f"/p/{prediction.id}/status/").json()["waiting_ahead"]

    assert ahead(second) == 1 and ahead(third) == 2  # everyone's photos count, not just one's own
    Prediction.objects.filter(pk=first.pk).update(status=Prediction.Status.PROCESSING)
    assert ahead(second) == 1  # being read now: still ahead
    Prediction.objects.filter(pk=first.pk).update(status=Prediction.Status.DONE)
    assert ahead(second) == 0 and ahead(third) == 1
    # A photo sent again (re-run) queues behind those sent before it, whenever it was uploaded.
    Prediction.objects.filter(pk=second.pk).update(enqueued_at=timezone.now() - timedelta(seconds=1))
    assert ahead(third) == 0 and ahead(second) == 1
    Prediction.objects.filter(pk=second.pk).update(status=Prediction.Status.DONE)
    assert ahead(second) is None  # not waiting

    page = client.get(f"/p/{third.id}/").content.decode()
    assert "Working on it… This page updates by itself." in page
    Prediction.objects.filter(pk=first.pk).update(status=Prediction.Status.QUEUED)
    assert "Waiting: 1 photo ahead of this one." in client.get(f"/p/{third.id}/").content.decode()
