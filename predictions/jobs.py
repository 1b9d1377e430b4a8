"""The worker's side of a job's state: start, lease, retry, finish, fail.

Each call names the message it runs (`job_id`, the Celery task id) and is fenced by it: a message that is
no longer the row's (the job was sent again since: taken back from a worker whose lease ran out, found
lost, or queued again by its sender) changes nothing, so that a job that runs twice records one result,
and one set of faces."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from predictions import files
from predictions.models import Face, Prediction, in_reading_order

if TYPE_CHECKING:
    import ml

_FINISHED = (Prediction.Status.DONE, Prediction.Status.FAILED)


def _locked(prediction_id: uuid.UUID | str, job_id: str | None) -> Prediction | None:
    """The row, locked, if `job_id` is its message (or either is unknown: rows and messages from before
    job ids, a direct call). None when gone or superseded."""
    prediction = Prediction.objects.select_for_update().filter(pk=prediction_id).first()
    if prediction is None:
        return None
    if job_id and prediction.job_id and str(prediction.job_id) != str(job_id):
        return None
    return prediction


def _lease_end() -> timezone.datetime:
    return timezone.now() + timedelta(seconds=settings.AGEGENDER_LEASE_SECONDS)


def prediction_start(*, prediction_id: uuid.UUID | str, job_id: str | None = None) -> Prediction | None:
    """Mark a prediction as processing, leased to this worker. None when there is nothing to do: the row
    is gone, its job was sent again as another message, or this message's job is finished already (a
    redelivery). The same message delivered again while the row is processing means that its earlier
    worker died (a message is delivered to one worker at a time), so it is taken over. Without a
    `job_id` (a direct call) the job runs whatever its state, replacing its result."""
    with transaction.atomic():
        prediction = _locked(prediction_id, job_id)
        if prediction is None or (job_id and prediction.status in _FINISHED):
            return None
        prediction.status = Prediction.Status.PROCESSING
        prediction.error = ""
        prediction.retryable = False
        prediction.started_at = timezone.now()
        prediction.finished_at = None
        prediction.lease_until = _lease_end()
        prediction.attempts += 1
        prediction.save(
            update_fields=[
                *("status", "error", "retryable", "started_at", "finished_at", "lease_until", "attempts")
            ]
        )
    return prediction


def prediction_renew_lease(*, prediction_id: uuid.UUID | str, job_id: str | None) -> bool:
    """The worker is still on it: its lease runs `AGEGENDER_LEASE_SECONDS` from now. False when the job
    is no longer its own."""
    rows = Prediction.objects.filter(pk=prediction_id, status=Prediction.Status.PROCESSING)
    if job_id:
        rows = rows.filter(job_id=job_id)
    return rows.update(lease_until=_lease_end()) > 0


def prediction_retry_later(*, prediction_id: uuid.UUID | str, job_id: str | None = None) -> Prediction | None:
    """The worker failed on this job for a reason that may pass (not the photo's) and has handed it back
    to the broker (the same message) to be tried again later: queued again, as handed over now."""
    with transaction.atomic():
        prediction = _locked(prediction_id, job_id)
        if prediction is None or prediction.status in _FINISHED:
            return None
        prediction.status = Prediction.Status.QUEUED
        prediction.error = ""
        prediction.enqueued_at = timezone.now()
        prediction.started_at = prediction.finished_at = prediction.lease_until = None
        prediction.save(
            update_fields=["status", "error", "enqueued_at", "started_at", "finished_at", "lease_until"]
        )
    return prediction


def prediction_retry_not_sent(*, prediction_id: uuid.UUID | str, job_id: str | None = None) -> None:
    """The broker refused the job's retry: queued, unsent, for the outbox to send once it is back."""
    rows = Prediction.objects.filter(pk=prediction_id).exclude(status__in=_FINISHED)
    if job_id:
        rows = rows.filter(job_id=job_id)
    rows.update(status=Prediction.Status.QUEUED, enqueued_at=None, started_at=None, lease_until=None)


def prediction_finish(
    *,
    prediction_id: uuid.UUID | str,
    faces: Iterable[ml.Face],
    model_version: str,
    image_width: int,
    image_height: int,
    inference_ms: int,
    thumbnail_jpeg: bytes | None = None,
    display_jpeg: bytes | None = None,
    job_id: str | None = None,
) -> Prediction | None:
    """Record the faces found, numbered in reading order, and the photo's renditions (replacing any
    earlier ones: safe to run twice). None when the row is gone or the job is no longer this one's."""
    storage = Prediction._meta.get_field("thumbnail").storage
    saved = {
        "thumbnail": files.save_rendition("thumbnail", prediction_id, thumbnail_jpeg),
        "display": files.save_rendition("display", prediction_id, display_jpeg),
    }
    try:
        with transaction.atomic():
            prediction = _locked(prediction_id, job_id)
            if prediction is None:
                for name in saved.values():
                    storage.delete(name) if name else None
                return None
            replaced = [getattr(prediction, field).name for field in saved]
            prediction.faces.all().delete()
            Face.objects.bulk_create(
                Face.from_result(face, prediction=prediction, index=index)
                for index, face in enumerate(in_reading_order(faces))
            )
            prediction.status = Prediction.Status.DONE
            prediction.error = ""
            prediction.retryable = False
            prediction.model_version = model_version[:100]
            prediction.image_width = image_width
            prediction.image_height = image_height
            prediction.inference_ms = inference_ms
            prediction.finished_at = timezone.now()
            prediction.lease_until = None
            if saved["thumbnail"]:
                prediction.thumbnail.name = saved["thumbnail"]
            prediction.display.name = saved["display"]  # none now (a smaller photo): none shown
            prediction.save()
            current = {prediction.thumbnail.name, prediction.display.name}
            files.delete_on_commit([name for name in replaced if name and name not in current])
    except BaseException:
        for name in saved.values():
            storage.delete(name) if name else None
        raise
    return prediction


def prediction_fail(
    *,
    prediction_id: uuid.UUID | str,
    error: str,
    model_version: str = "",
    retryable: bool = False,
    job_id: str | None = None,
) -> Prediction | None:
    """Record a readable reason why a prediction could not be made; `retryable` when the reason was not
    the photo (its sender may then try again). None when the row is gone or the job no longer this one's."""
    with transaction.atomic():
        prediction = _locked(prediction_id, job_id)
        if prediction is None:
            return None
        prediction.faces.all().delete()
        prediction.status = Prediction.Status.FAILED
        prediction.error = error[:500]
        prediction.retryable = retryable
        if model_version:
            prediction.model_version = model_version[:100]
        prediction.finished_at = timezone.now()
        prediction.lease_until = None
        prediction.save(
            update_fields=["status", "error", "retryable", "model_version", "finished_at", "lease_until"]
        )
    return prediction
