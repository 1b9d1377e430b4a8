"""Redis down when a photo is uploaded: the upload still succeeds, nothing is lost, and the job is sent
once the broker answers again by the outbox (beat every minute, a worker starting, or `manage.py
send_unsent`); a page's polls only read."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone

from predictions import outbox, services
from predictions.models import Prediction
from predictions.uploads import check_image_upload
from tests.conftest import stored_files, wait_until_finished


def _age(prediction: Prediction, **fields: timedelta) -> None:
    now = timezone.now()
    Prediction.objects.filter(pk=prediction.pk).update(**{name: now - ago for name, ago in fields.items()})


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_an_upload_while_redis_is_down_is_kept_and_read_once_it_is_back(
    client, celery_worker, broker_away, private_media, astronaut_jpeg
):
    upload = SimpleUploadedFile("me.jpg", astronaut_jpeg, content_type="image/jpeg")
    response = client.post("/", {"images": [upload]})

    assert response.status_code == 302  # not a server error: the photo is taken
    prediction = Prediction.objects.get()
    assert (prediction.status, prediction.enqueued_at) == (Prediction.Status.QUEUED, None), vars(prediction)
    assert len(stored_files(private_media)) == 1
    _age(prediction, created_at=timedelta(seconds=30))
    assert client.get(f"/p/{prediction.id}/status/").json()["status"] == "queued"  # still away: waits

    broker_away()  # Redis is back; polls read only, and the outbox's next run (beat) sends the job
    assert client.get(f"/p/{prediction.id}/status/").json()["status"] == "queued"
    prediction.refresh_from_db()
    assert prediction.enqueued_at is None
    assert outbox.send_unsent() == 1
    payload = wait_until_finished(client, prediction.id)

    assert payload["status"] == "done" and payload["face_count"] == 1
    assert payload["faces"][0]["gender"] == "female"
    prediction.refresh_from_db()
    assert prediction.enqueued_at is not None and prediction.attempts == 1, vars(prediction)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_while_redis_is_away_an_upload_pays_for_one_attempt_and_the_polls_for_none(
    client, celery_worker, broker_away, settings, monkeypatch, astronaut_jpeg
):
    """Reaching for a broker that is away takes time; after one failure the web leaves it alone for
    `AGEGENDER_BROKER_RETRY_PAUSE` seconds, and polls never reach for it; the outbox sends what waited."""
    from celery import current_app

    settings.AGEGENDER_BROKER_RETRY_PAUSE = 1
    attempts = []
    real_send_task = current_app.send_task

    def counted_send_task(*args, **kwargs):
        attempts.append(args)
        return real_send_task(*args, **kwargs)

    monkeypatch.setattr(current_app, "send_task", counted_send_task)
    photos = [SimpleUploadedFile(f"{i}.jpg", astronaut_jpeg, content_type="image/jpeg") for i in range(3)]

    assert client.post("/", {"images": photos}).status_code == 302
    predictions = list(Prediction.objects.all())
    assert len(predictions) == 3 and {p.enqueued_at for p in predictions} == {None}
    assert len(attempts) == 1  # the first send failed; the other two did not try
    for prediction in predictions:
        _age(prediction, created_at=timedelta(seconds=30))
        assert client.get(f"/p/{prediction.id}/status/").json()["status"] == "queued"
    assert len(attempts) == 1  # nor did the polls

    broker_away()  # Redis is back; once the pause is over, the outbox's next run sends what waited
    time.sleep(1.1)
    assert len(attempts) == 1 and outbox.send_unsent() == 3
    payloads = [wait_until_finished(client, prediction.id) for prediction in predictions]

    assert [payload["status"] for payload in payloads] == ["done"] * 3
    assert len(attempts) == 1 + 3


@pytest.mark.django_db
def test_the_sweep_sends_only_jobs_nobody_holds_each_as_a_new_message(
    settings, jobs_go_nowhere, astronaut_jpeg, django_capture_on_commit_callbacks
):
    """Unsent, lost by the broker, or held by a worker whose lease ran out: sent again, under a new
    message id. Queued in the broker, just created, finished, or leased: left alone."""
    import redis

    upload = SimpleUploadedFile("me.jpg", astronaut_jpeg, content_type="image/jpeg")
    checked = check_image_upload(upload)
    names = ("unsent", "just_created", "lost", "waiting", "done", "dead_worker", "working")
    with django_capture_on_commit_callbacks(execute=False):  # created, never sent (enqueued_at empty)
        rows = {
            name: services.prediction_create(upload=upload, checked=checked, owner=None, session_key="k")
            for name in names
        }
    assert outbox.send(rows["waiting"].pk, rows["waiting"].job_id)  # for real: in the broker's queue
    _age(rows["unsent"], created_at=timedelta(minutes=1))
    _age(rows["lost"], created_at=timedelta(hours=3), enqueued_at=timedelta(hours=2))
    _age(rows["waiting"], created_at=timedelta(minutes=2), enqueued_at=timedelta(minutes=1))
    _age(rows["done"], created_at=timedelta(minutes=1))
    Prediction.objects.filter(pk=rows["done"].pk).update(status=Prediction.Status.DONE)
    for name, lease in (("dead_worker", -timedelta(seconds=1)), ("working", timedelta(minutes=1))):
        _age(rows[name], created_at=timedelta(minutes=5), enqueued_at=timedelta(minutes=5))
        Prediction.objects.filter(pk=rows[name].pk).update(
            status=Prediction.Status.PROCESSING, lease_until=timezone.now() + lease
        )

    assert outbox.sweep() == 3

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    messages = {
        message["headers"]["id"]: message["headers"]["argsrepr"]
        for message in map(json.loads, broker.lrange(jobs_go_nowhere, 0, -1))
    }
    fresh = {p.pk: p for p in Prediction.objects.all()}
    assert messages == {
        str(fresh[rows[name].pk].job_id): repr([str(rows[name].id)])
        for name in ("waiting", "unsent", "lost", "dead_worker")
    }
    assert fresh[rows["lost"].pk].job_id != rows["lost"].job_id  # a new message: the old one is void
    assert fresh[rows["waiting"].pk].job_id == rows["waiting"].job_id
    assert fresh[rows["dead_worker"].pk].status == Prediction.Status.QUEUED
    assert fresh[rows["working"].pk].status == Prediction.Status.PROCESSING
    assert fresh[rows["just_created"].pk].enqueued_at is None  # its own send may still be running
    assert outbox.sweep() == 0  # all held now: not again


@pytest.mark.django_db
def test_send_unsent_command_says_how_many(settings, capsys, broker_away, jobs_go_nowhere, astronaut_jpeg):
    upload = SimpleUploadedFile("me.jpg", astronaut_jpeg, content_type="image/jpeg")
    prediction = services.prediction_create(
        upload=upload, checked=check_image_upload(upload), owner=None, session_key="k"
    )  # never sent: this test's transaction never commits
    _age(prediction, created_at=timedelta(minutes=5))

    call_command("send_unsent")
    assert "Sent 0 jobs again." in capsys.readouterr().out  # still away

    broker_away()
    import redis

    call_command("send_unsent")
    assert "Sent 1 job again." in capsys.readouterr().out
    assert redis.Redis.from_url(settings.CELERY_BROKER_URL).llen(jobs_go_nowhere) == 1


@pytest.mark.django_db(transaction=True)
def test_rows_queued_before_the_upgrade_count_as_sent_when_created():
    """Migration 0003: jobs queued before `enqueued_at` existed were sent as they were created; they
    are not all sent again at once after the upgrade."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("predictions", "0002_prediction_as_one_face")])
    old = MigrationExecutor(connection).loader.project_state(("predictions", "0002_prediction_as_one_face"))
    OldPrediction = old.apps.get_model("predictions", "Prediction")
    created = timezone.now() - timedelta(minutes=3)
    queued = OldPrediction.objects.create(
        image="x.jpg", original_name="x.jpg", session_key="k", created_at=created
    )
    done = OldPrediction.objects.create(
        image="y.jpg", original_name="y.jpg", session_key="k", created_at=created, status="done"
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert Prediction.objects.get(pk=queued.pk).enqueued_at == created
    assert Prediction.objects.get(pk=done.pk).enqueued_at is None
