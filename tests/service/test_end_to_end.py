"""Upload → real Redis → real Celery worker → real model → status endpoint says done."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile

from predictions import services
from predictions.models import Prediction
from tests.conftest import wait_until_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def upload(client, name: str, content: bytes) -> Prediction:
    response = client.post("/", {"images": [SimpleUploadedFile(name, content, content_type="image/jpeg")]})
    assert response.status_code == 302, response.content.decode()
    return Prediction.objects.get(original_name=name)


def test_one_face_photo_ends_done_with_one_female_face(client, celery_worker, astronaut_jpeg):
    prediction = upload(client, "astronaut.jpg", astronaut_jpeg)

    status = wait_until_finished(client, prediction.id)

    assert status["status"] == "done", status
    order = ["queued", "processing", "done"]
    assert status["seen_statuses"] == sorted(status["seen_statuses"], key=order.index)  # never backwards
    assert status["face_count"] == 1
    face = status["faces"][0]
    assert face["gender"] == "female"
    assert 0.5 <= face["gender_confidence"] <= 1.0
    assert face["age_low"] <= face["age"] <= face["age_high"]
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    assert (status["image_width"], status["image_height"]) == (512, 512)
    assert status["model_version"]
    prediction.refresh_from_db()
    assert prediction.faces.count() == 1
    assert prediction.thumbnail.name and prediction.inference_ms is not None
    assert prediction.started_at <= prediction.finished_at


def test_a_sideways_iphone_photo_is_read_upright(client, celery_worker, sideways_heic):
    response = client.post(
        "/", {"images": [SimpleUploadedFile("IMG_0042.HEIC", sideways_heic, content_type="image/heic")]}
    )
    assert response.status_code == 302, response.content.decode()
    prediction = Prediction.objects.get(original_name="IMG_0042.HEIC")

    status = wait_until_finished(client, prediction.id)

    assert status["status"] == "done", status
    assert (status["image_width"], status["image_height"]) == (384, 512)
    assert [face["gender"] for face in status["faces"]] == ["female"]  # found upright, as in the JPEG
    x1, y1, x2, y2 = status["faces"][0]["box"]
    assert 0 <= x1 < x2 <= 384 and 0 <= y1 < y2 <= 512
    assert y2 < 300  # her face is in the upper part of the upright photo


def test_a_heic_is_shown_as_a_placeholder_its_shape_then_as_its_upright_jpeg_copy(
    client, celery_worker, settings, sideways_heic
):
    """A HEIC is stored as sent (checked without decoding it, which takes a phone's 12-MP photo up to a
    second). Browsers cannot show it, so until the worker has read it the pages show a placeholder of
    its shape, and then the JPEG copy the worker made: upright, the same picture."""
    import io
    import uuid

    import numpy as np
    import redis
    from PIL import Image

    from tests.conftest import astronaut_portrait

    worker_queue = settings.AGEGENDER_QUEUE
    settings.AGEGENDER_QUEUE = nowhere = f"test-nowhere-{uuid.uuid4().hex[:8]}"  # read by no worker, yet
    response = client.post(
        "/", {"images": [SimpleUploadedFile("IMG_0042.HEIC", sideways_heic, content_type="image/heic")]}
    )
    assert response.status_code == 302, response.content.decode()
    prediction = Prediction.objects.get(original_name="IMG_0042.HEIC")
    assert prediction.image.name.endswith(".heic")
    assert prediction.image.read() == sideways_heic  # as sent (it says nothing of where it was taken)
    waiting = client.get(f"/p/{prediction.id}/image/")
    assert waiting["Content-Type"] == "image/svg+xml" and waiting["Cache-Control"] == "no-store"
    assert 'width="384" height="512"' in waiting.content.decode()  # upright: portrait
    assert client.get(f"/p/{prediction.id}/thumbnail/")["Content-Type"] == "image/svg+xml"
    assert "data-awaits-preview" in client.get(f"/p/{prediction.id}/").content.decode()
    original = client.get(f"/p/{prediction.id}/original/")
    assert original["Content-Type"] == "image/heic"
    assert b"".join(original.streaming_content) == sideways_heic

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(nowhere)
    settings.AGEGENDER_QUEUE = worker_queue
    assert services._send(prediction.id)  # now to the worker
    assert wait_until_finished(client, prediction.id)["status"] == "done"

    served = client.get(f"/p/{prediction.id}/image/")
    assert served["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(b"".join(served.streaming_content))) as shown:
        assert shown.size == (384, 512) and shown.getexif().get(0x0112, 1) == 1
        difference = np.abs(np.asarray(shown.convert("RGB"), dtype=int) - astronaut_portrait()).mean()
    assert difference < 8  # the same picture, upright
    assert client.get(f"/p/{prediction.id}/thumbnail/")["Content-Type"] == "image/jpeg"
    assert "data-awaits-preview" not in client.get(f"/p/{prediction.id}/").content.decode()


def test_photo_with_two_faces_reports_two(client, celery_worker, two_faces_jpeg):
    prediction = upload(client, "twins.jpg", two_faces_jpeg)

    status = wait_until_finished(client, prediction.id)

    assert status["status"] == "done", status
    assert status["face_count"] == 2
    left, right = status["faces"]  # numbered in reading order
    assert left["box"][2] <= 512 <= right["box"][0]  # one face on each half
    page = client.get(f"/p/{prediction.id}/").content.decode()
    assert page.count('class="box"') == 2


def test_photo_without_faces_is_done_with_zero_faces_shown_clearly(client, celery_worker, no_face_jpeg):
    prediction = upload(client, "wall.jpg", no_face_jpeg)

    status = wait_until_finished(client, prediction.id)

    assert status["status"] == "done" and status["face_count"] == 0
    assert "No face found in this photo." in client.get(f"/p/{prediction.id}/").content.decode()


def test_a_file_the_engine_cannot_read_ends_failed_with_its_reason(client, celery_worker, private_media):
    # Bypass the upload checks to reach the worker with garbage, as a corrupted store would.
    session = client.session
    session["predictions_visitor"] = "visitor-1"
    session.save()
    prediction = Prediction(original_name="garbage.jpg", session_key="visitor-1")
    prediction.image.save("garbage.jpg", ContentFile(b"\x00garbage" * 100), save=True)
    services.prediction_rerun(prediction=prediction)

    status = wait_until_finished(client, prediction.id)

    assert status["status"] == "failed"
    assert status["error"] and "went wrong" not in status["error"]
    assert status["faces"] == []
    # Not run again, nor offered to its sender: the same bytes would fail the same way.
    assert status["retryable"] is False
    prediction.refresh_from_db()
    assert prediction.attempts == 1
    response = client.post(f"/p/{prediction.id}/try-again/", follow=True)
    assert "Only a photo that failed for a passing reason can be tried again." in response.content.decode()
    prediction.refresh_from_db()
    assert prediction.status == Prediction.Status.FAILED and prediction.attempts == 1


def test_task_is_idempotent_and_exits_cleanly_when_the_row_is_gone(predictor, astronaut_jpeg, private_media):
    from worker.tasks import predict

    prediction = Prediction(original_name="a.jpg", session_key="visitor-2")
    prediction.image.save("a.jpg", ContentFile(astronaut_jpeg), save=True)

    assert predict(str(prediction.id)) == "done"
    first = list(prediction.faces.values_list("id", flat=True))
    assert predict(str(prediction.id)) == "done"
    second = list(prediction.faces.values_list("id", flat=True))

    assert len(first) == len(second) == 1 and first != second  # replaced, not added
    prediction.refresh_from_db()
    assert prediction.attempts == 2 and prediction.status == "done"
    thumbnails = [p for p in private_media.rglob("*") if p.is_file() and "thumbnails" in p.parts]
    assert len(thumbnails) == 1  # the first run's thumbnail was replaced, not left behind

    prediction_id = str(prediction.id)
    services.prediction_delete(prediction=prediction)
    assert predict(prediction_id) == "gone"
    assert [p for p in private_media.rglob("*") if p.is_file()] == []  # delete removed image and thumbnail
    assert predict("not-a-uuid") == "ignored"


def test_task_is_acknowledged_late_requeued_on_worker_loss_and_time_limited(settings):
    from agegender_site.celery import app
    from worker.tasks import predict

    assert predict.name == settings.AGEGENDER_PREDICT_TASK
    assert predict.acks_late and predict.reject_on_worker_lost
    assert 0 < predict.soft_time_limit < predict.time_limit
    transport = app.conf.broker_transport_options
    assert transport["visibility_timeout"] > predict.time_limit  # Redis must not redeliver a running job
    assert app.conf.worker_prefetch_multiplier == 1 and app.conf.task_serializer == "json"


def large_portrait_jpeg(orientation: int = 1) -> bytes:
    """The astronaut enlarged into a 2400×3200 phone-sized photo (one face), EXIF orientation as given."""
    import io

    from PIL import Image

    from tests.conftest import astronaut_portrait

    photo = Image.fromarray(astronaut_portrait()).resize((2400, 3200), Image.Resampling.BICUBIC)  # 384×512 →
    exif = Image.Exif()
    if orientation != 1:  # stored turned, with the tag that turns it back
        photo = photo.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def test_a_large_photo_is_shown_from_a_lighter_upright_copy(client, celery_worker, private_media):
    from io import BytesIO

    from PIL import Image

    original = large_portrait_jpeg(orientation=6)  # stored 3200×2400, upright 2400×3200
    prediction = upload(client, "phone.jpg", original)

    status = wait_until_finished(client, prediction.id)

    assert status["status"] == "done" and status["face_count"] == 1
    assert (status["image_width"], status["image_height"]) == (2400, 3200)  # boxes: the upright original
    shown = b"".join(client.get(f"/p/{prediction.id}/image/").streaming_content)
    with Image.open(BytesIO(shown)) as display:
        assert display.format == "JPEG" and display.size == (1200, 1600)  # upright, 1600 on the long side
    assert len(shown) < len(original) / 2  # a quarter of the pixels
    kept = b"".join(client.get(f"/p/{prediction.id}/original/").streaming_content)
    assert kept == original

    prediction.refresh_from_db()
    assert prediction.display.name and prediction.thumbnail.name
    services.prediction_delete(prediction=prediction)  # commits here: the files go with it
    assert [p for p in private_media.rglob("*") if p.is_file()] == []  # photo, thumbnail and copy


def test_a_photo_no_larger_than_the_pages_show_gets_no_copy(client, celery_worker, astronaut_jpeg):
    prediction = upload(client, "astronaut.jpg", astronaut_jpeg)  # 512×512

    wait_until_finished(client, prediction.id)

    prediction.refresh_from_db()
    assert prediction.display.name == ""
    assert b"".join(client.get(f"/p/{prediction.id}/image/").streaming_content) == astronaut_jpeg
