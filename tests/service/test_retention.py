"""Photos of visitors who never sign in are deleted, with their files, once their retention is over;
signed-in users keep theirs. The periodic upkeep runs as Celery tasks on the real worker."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone

from predictions import services
from predictions.models import Prediction
from predictions.uploads import check_image_upload
from tests.conftest import stored_files


def make(jpeg: bytes, *, days_old: float, owner=None) -> Prediction:
    upload = SimpleUploadedFile("me.jpg", jpeg, content_type="image/jpeg")
    prediction = services.prediction_create(
        upload=upload, checked=check_image_upload(upload), owner=owner, session_key="" if owner else "visitor"
    )
    Prediction.objects.filter(pk=prediction.pk).update(created_at=timezone.now() - timedelta(days=days_old))
    return prediction


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_go_nowhere")  # no worker reads these photos (and adds thumbnails) meanwhile
def test_anonymous_photos_past_their_retention_go_with_their_files(settings, private_media, astronaut_jpeg):
    settings.AGEGENDER_ANONYMOUS_RETENTION_DAYS = 14
    user = get_user_model().objects.create_user("erin", password="a-long-password-123")
    expired = make(astronaut_jpeg, days_old=15)
    recent = make(astronaut_jpeg, days_old=13)
    owned = make(astronaut_jpeg, days_old=400, owner=user)
    kept_files = {recent.image.name, owned.image.name}
    assert len(stored_files(private_media)) == 3

    assert services.predictions_purge_anonymous(batch_size=1) == 1

    assert set(Prediction.objects.values_list("pk", flat=True)) == {recent.pk, owned.pk}
    assert {path.relative_to(private_media).as_posix() for path in stored_files(private_media)} == kept_files
    assert expired.image.name not in kept_files

    call_command("housekeeping", stdout=(out := io.StringIO()))  # the same by hand: nothing left to do
    assert out.getvalue().strip() == "Deleted 0 expired anonymous prediction(s)."
    Prediction.objects.filter(pk=recent.pk).update(created_at=timezone.now() - timedelta(days=30))
    call_command("housekeeping", stdout=(out := io.StringIO()))
    assert out.getvalue().strip() == "Deleted 1 expired anonymous prediction(s)."
    recent = make(astronaut_jpeg, days_old=1)

    settings.AGEGENDER_ANONYMOUS_RETENTION_DAYS = 0  # keep everything
    Prediction.objects.filter(pk=recent.pk).update(created_at=timezone.now() - timedelta(days=999))
    assert services.predictions_purge_anonymous() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_worker_runs_the_hourly_housekeeping(settings, celery_worker, private_media, astronaut_jpeg):
    """Sent by name as Celery beat sends it, to the queue beat uses; the real worker deletes the expired
    photo, its file and the expired sessions."""
    from agegender_site.celery import app

    settings.AGEGENDER_ANONYMOUS_RETENTION_DAYS = 14
    expired = make(astronaut_jpeg, days_old=20)
    recent = make(astronaut_jpeg, days_old=1)
    Session.objects.create(session_key="old", session_data="", expire_date=timezone.now() - timedelta(days=1))
    Session.objects.create(
        session_key="live", session_data="", expire_date=timezone.now() + timedelta(days=1)
    )

    schedule = settings.CELERY_BEAT_SCHEDULE["housekeeping"]
    app.send_task(schedule["task"], queue=settings.AGEGENDER_QUEUE)  # the fixture's queue, as beat's

    deadline = time.monotonic() + 120
    while Prediction.objects.filter(pk=expired.pk).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Prediction.objects.filter(pk=expired.pk).exists()
    assert Prediction.objects.filter(pk=recent.pk).exists()

    def files_of(prediction: Prediction) -> list[str]:  # its photo and, once read, its thumbnail
        return [path.name for path in stored_files(private_media) if prediction.id.hex in path.name]

    for _ in range(50):  # the files go once the delete has committed; sessions right after
        if not files_of(expired) and not Session.objects.filter(session_key="old").exists():
            break
        time.sleep(0.1)
    assert files_of(expired) == []
    assert recent.image.name.rsplit("/", 1)[-1] in files_of(recent)
    assert list(Session.objects.values_list("session_key", flat=True)) == ["live"]


def test_beat_schedules_the_upkeep_tasks_on_the_deployments_queue(settings):
    """The schedule names tasks the worker registers, on the queue this deployment's workers read."""
    import worker.tasks  # noqa: F401  (registers the tasks)
    from agegender_site.celery import app

    tasks = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert set(tasks) == {"worker.sweep", "worker.housekeeping", "worker.delete_orphaned_files"}
    for name, entry in tasks.items():
        assert name in app.tasks
        assert entry["options"]["queue"] == settings.CELERY_TASK_DEFAULT_QUEUE  # what workers read
        assert entry["options"]["expires"] < entry["schedule"]  # never a backlog of upkeep


@pytest.mark.django_db
def test_visitors_are_told_how_long_their_photos_are_kept(client, settings):
    settings.AGEGENDER_ANONYMOUS_RETENTION_DAYS = 14
    assert "deleted 14 days after upload" in client.get("/history/").content.decode()
    settings.AGEGENDER_ANONYMOUS_RETENTION_DAYS = 0
    assert "deleted" not in client.get("/history/").content.decode()
