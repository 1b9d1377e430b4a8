"""Writes: every change to predictions goes through these functions (views, admin and worker call them)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from predictions.models import Face, Prediction
from predictions.uploads import CheckedImage

logger = logging.getLogger(__name__)

_FACE_FIELDS = (
    "detected",
    "detection_confidence",
    "age",
    "age_low",
    "age_high",
    "gender",
    "gender_confidence",
)


#: Until when (`time.monotonic()`) this process leaves the broker alone after failing to reach it.
_broker_away_until = 0.0


def _send(prediction_id: uuid.UUID | str) -> bool:
    """Hand the job to the broker by task name (the web never imports the worker) and note when. A broker
    that cannot be reached is logged, not raised: the photo and its row are kept, queued, and the job is
    sent again by `predictions_send_unsent` (the status page's polling, a worker starting, or the
    `send_unsent` command).

    Reaching for a broker that is away takes time (0.6 s when the connection is refused, seconds more
    when it times out), so after a failure this process does not try again for
    `AGEGENDER_BROKER_RETRY_PAUSE` seconds: an upload of 20 photos, or the polls of every waiting page,
    pay for one attempt, not one each."""
    global _broker_away_until
    if time.monotonic() < _broker_away_until:
        return False
    try:
        current_app.send_task(
            settings.AGEGENDER_PREDICT_TASK, args=[str(prediction_id)], queue=settings.AGEGENDER_QUEUE
        )
    except Exception as exc:  # kombu's OperationalError, a timeout, a refused login: whatever the broker says
        _broker_away_until = time.monotonic() + settings.AGEGENDER_BROKER_RETRY_PAUSE
        # A warning, not a traceback: while the broker is away every poll of a waiting page tries again.
        logger.warning(
            "Could not queue prediction %s (%s); it stays queued, to be sent again", prediction_id, exc
        )
        return False
    # Whatever its status now: a fast worker may already have started it (found by the outage test).
    Prediction.objects.filter(pk=prediction_id).update(enqueued_at=timezone.now())
    return True


def _enqueue_on_commit(prediction_id: uuid.UUID) -> None:
    """Send the job once the row is visible to the worker."""
    transaction.on_commit(lambda: _send(prediction_id))


#: A queued row younger than this may still be on its way to the broker (its commit's send running).
UNSENT_GRACE = timedelta(seconds=10)


def _unsent_cutoffs() -> tuple[datetime, datetime]:
    """A queued job counts as unsent when created before the first time and never handed over, or as
    lost when handed over before the second: the one rule of the two functions below."""
    now = timezone.now()
    return now - UNSENT_GRACE, now - timedelta(seconds=settings.AGEGENDER_RESEND_AFTER)


def prediction_may_be_unsent(prediction: Prediction) -> bool:
    """Whether `predictions_send_unsent` would send this prediction's job again (no query)."""
    if prediction.status != Prediction.Status.QUEUED:
        return False
    created_before, sent_before = _unsent_cutoffs()
    if prediction.enqueued_at is None:
        return prediction.created_at < created_before
    return prediction.enqueued_at < sent_before


def predictions_send_unsent(*, prediction_ids: Iterable[uuid.UUID] | None = None, limit: int = 500) -> int:
    """Send again the jobs of queued predictions the broker never got (it could not be reached when they
    were queued), and of those queued so long ago (`AGEGENDER_RESEND_AFTER`) that the broker must have
    lost them (a Redis restarted without persistence). Returns how many were handed over. The job is
    idempotent, so a job sent twice only costs a second reading of the photo."""
    created_before, sent_before = _unsent_cutoffs()
    stale = Prediction.objects.filter(status=Prediction.Status.QUEUED).filter(
        Q(enqueued_at__isnull=True, created_at__lt=created_before) | Q(enqueued_at__lt=sent_before)
    )
    if prediction_ids is not None:
        stale = stale.filter(pk__in=list(prediction_ids))
    sent = 0
    for prediction_id in stale.order_by("created_at").values_list("pk", flat=True)[:limit]:
        if not _send(prediction_id):
            break  # the broker is still away: the rest waits for the next call
        sent += 1
    if sent:
        logger.info("Sent %d queued prediction job(s) again", sent)
    return sent


def _delete_files_on_commit(names: Iterable[str]) -> None:
    storage = Prediction._meta.get_field("image").storage
    for name in [name for name in names if name]:
        transaction.on_commit(lambda name=name: storage.delete(name))


def prediction_create(
    *, upload: UploadedFile, checked: CheckedImage, owner: AbstractBaseUser | None, session_key: str
) -> Prediction:
    """Store the photo and create its row, queued; either both happen or neither does."""
    if owner is None and not session_key:
        raise ValueError("a prediction needs an owner or a session key")
    prediction = Prediction(
        owner=owner if owner is not None else None,
        session_key="" if owner is not None else session_key,
        original_name=(upload.name or "photo")[-255:],
        image_width=checked.width,
        image_height=checked.height,
    )
    upload.seek(0)
    content = upload if checked.converted is None else ContentFile(checked.converted)
    prediction.image.save(f"upload.{checked.extension}", content, save=False)  # storage first ...
    try:
        with transaction.atomic():
            prediction.save(force_insert=True)  # ... then the row
            _enqueue_on_commit(prediction.id)
    except BaseException:
        prediction.image.storage.delete(prediction.image.name)  # no file without a row
        raise
    return prediction


def prediction_start(*, prediction_id: uuid.UUID | str) -> Prediction | None:
    """Mark a prediction as processing (for the worker). None when the row is gone."""
    with transaction.atomic():
        prediction = Prediction.objects.select_for_update().filter(pk=prediction_id).first()
        if prediction is None:
            return None
        prediction.status = Prediction.Status.PROCESSING
        prediction.error = ""
        prediction.retryable = False
        prediction.started_at = timezone.now()
        prediction.finished_at = None
        prediction.attempts += 1
        prediction.save(
            update_fields=["status", "error", "retryable", "started_at", "finished_at", "attempts"]
        )
    return prediction


def prediction_retry_later(*, prediction_id: uuid.UUID | str) -> Prediction | None:
    """The worker failed on this job for a reason that may pass (not the photo's) and is about to hand it
    back to the broker to be tried again later: queued again, as handed over now. None when the row is
    gone (nothing to retry)."""
    with transaction.atomic():
        prediction = Prediction.objects.select_for_update().filter(pk=prediction_id).first()
        if prediction is None:
            return None
        prediction.status = Prediction.Status.QUEUED
        prediction.error = ""
        prediction.enqueued_at = timezone.now()
        prediction.started_at = prediction.finished_at = None
        prediction.save(update_fields=["status", "error", "enqueued_at", "started_at", "finished_at"])
    return prediction


def prediction_retry_not_sent(*, prediction_id: uuid.UUID | str) -> None:
    """The broker refused the retry `prediction_retry_later` announced: mark the job unsent, so that
    `predictions_send_unsent` sends it once the broker is back."""
    Prediction.objects.filter(pk=prediction_id, status=Prediction.Status.QUEUED).update(enqueued_at=None)


def in_reading_order(faces: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Faces as a person reads a group photo: rows from the top, each from the left. A face joins the row
    above when its centre is within half a face height of that row's (the engine gives largest first;
    the page numbers faces, and its list is easier to match with the boxes in this order)."""
    rows: list[dict[str, Any]] = []
    for face in sorted(faces, key=lambda face: face["box"][1] + face["box"][3]):
        x1, y1, x2, y2 = face["box"]
        centre, height = (y1 + y2) / 2, y2 - y1
        row = rows[-1] if rows else None
        if row is not None and centre - row["centre"] < 0.5 * max(row["height"], height):
            row["faces"].append(face)
            count = len(row["faces"])
            row["centre"] += (centre - row["centre"]) / count
            row["height"] += (height - row["height"]) / count
        else:
            rows.append({"centre": centre, "height": height, "faces": [face]})
    return [face for row in rows for face in sorted(row["faces"], key=lambda face: face["box"][0])]


def _save_rendition(field_name: str, prediction_id: uuid.UUID | str, jpeg: bytes | None) -> str:
    """Store a JPEG made from the photo (thumbnail, display copy) under its field's name; "" for none."""
    if not jpeg:
        return ""
    field = Prediction._meta.get_field(field_name)
    name = field.generate_filename(Prediction(id=uuid.UUID(str(prediction_id))), f"{field_name}.jpg")
    return field.storage.save(name, ContentFile(jpeg))


def prediction_finish(
    *,
    prediction_id: uuid.UUID | str,
    faces: Iterable[Mapping[str, Any]],
    model_version: str,
    image_width: int,
    image_height: int,
    inference_ms: int,
    thumbnail_jpeg: bytes | None = None,
    display_jpeg: bytes | None = None,
) -> Prediction | None:
    """Record the faces found, numbered in reading order, and the photo's renditions (replacing any
    earlier ones: safe to run twice). None when the row is gone."""
    storage = Prediction._meta.get_field("thumbnail").storage
    saved = {
        "thumbnail": _save_rendition("thumbnail", prediction_id, thumbnail_jpeg),
        "display": _save_rendition("display", prediction_id, display_jpeg),
    }
    try:
        with transaction.atomic():
            prediction = Prediction.objects.select_for_update().filter(pk=prediction_id).first()
            if prediction is None:
                for name in saved.values():
                    storage.delete(name) if name else None
                return None
            replaced = [getattr(prediction, field).name for field in saved]
            prediction.faces.all().delete()
            Face.objects.bulk_create(
                Face(
                    prediction=prediction,
                    index=index,
                    x1=int(face["box"][0]),
                    y1=int(face["box"][1]),
                    x2=int(face["box"][2]),
                    y2=int(face["box"][3]),
                    **{field: face[field] for field in _FACE_FIELDS},
                )
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
            if saved["thumbnail"]:
                prediction.thumbnail.name = saved["thumbnail"]
            prediction.display.name = saved["display"]  # none now (a smaller photo): none shown
            prediction.save()
            current = {prediction.thumbnail.name, prediction.display.name}
            _delete_files_on_commit([name for name in replaced if name and name not in current])
    except BaseException:
        for name in saved.values():
            storage.delete(name) if name else None
        raise
    return prediction


def prediction_fail(
    *, prediction_id: uuid.UUID | str, error: str, model_version: str = "", retryable: bool = False
) -> Prediction | None:
    """Record a readable reason why a prediction could not be made; `retryable` when the reason was not
    the photo (its sender may then try again). None when the row is gone."""
    with transaction.atomic():
        prediction = Prediction.objects.select_for_update().filter(pk=prediction_id).first()
        if prediction is None:
            return None
        prediction.faces.all().delete()
        prediction.status = Prediction.Status.FAILED
        prediction.error = error[:500]
        prediction.retryable = retryable
        if model_version:
            prediction.model_version = model_version[:100]
        prediction.finished_at = timezone.now()
        prediction.save(update_fields=["status", "error", "retryable", "model_version", "finished_at"])
    return prediction


def _requeue(prediction_id: uuid.UUID, **changes: Any) -> None:
    """Queue a prediction's job again, from the start; the worker replaces its faces."""
    Prediction.objects.filter(pk=prediction_id).update(
        status=Prediction.Status.QUEUED,
        error="",
        retryable=False,
        enqueued_at=None,
        started_at=None,
        finished_at=None,
        **changes,
    )
    _enqueue_on_commit(prediction_id)


def prediction_rerun(*, prediction: Prediction) -> None:
    """Queue a prediction again (admin action), whatever its state."""
    with transaction.atomic():
        _requeue(prediction.pk)


class NotRetryable(ValueError):
    """Only a photo that failed for a reason other than the photo itself can be tried again."""


def prediction_try_again(*, prediction: Prediction) -> None:
    """Its sender asks for a photo that failed through no fault of its own to be read again."""
    _requeue_if(
        prediction,
        lambda locked: locked.can_try_again,
        NotRetryable("Only a photo that failed for a passing reason can be tried again."),
    )


class NotReadableAsOneFace(ValueError):
    """Only a photo in which no face was found can be read again as one face."""


def prediction_read_as_one_face(*, prediction: Prediction) -> None:
    """The sender says the photo is a face: queue it again with the whole-image fallback on."""
    _requeue_if(
        prediction,
        lambda locked: locked.readable_as_one_face,
        NotReadableAsOneFace("Only a photo in which no face was found can be read as one face."),
        as_one_face=True,
    )


def _requeue_if(
    prediction: Prediction, allowed: Callable[[Prediction], bool], refusal: Exception, **changes: Any
) -> None:
    """Queue a prediction again (with `changes`) if `allowed` says so of its row, locked against a
    second press of the same button meanwhile; else raise `refusal`."""
    with transaction.atomic():
        locked = Prediction.objects.select_for_update().get(pk=prediction.pk)
        if not allowed(locked):
            raise refusal
        _requeue(locked.pk, **changes)


def prediction_files_delete(*, prediction: Prediction) -> None:
    """Delete a deleted prediction's stored files once its delete has committed. Connected to every
    delete of a row (`signals`): the owner's, the admin's (one or many), a user's account, the purge."""
    _delete_files_on_commit([prediction.image.name, prediction.thumbnail.name, prediction.display.name])


def prediction_delete(*, prediction: Prediction) -> None:
    """Delete a prediction, its faces and its stored files (files go once the delete has committed)."""
    with transaction.atomic():
        prediction.delete()


def predictions_delete_all(*, predictions: QuerySet[Prediction]) -> int:
    """Delete the given predictions (a viewer's own, from `selectors`) with their files; how many."""
    with transaction.atomic():
        return predictions.delete()[1].get(Prediction._meta.label, 0)  # files: the delete signal


def account_delete(*, user: AbstractBaseUser) -> int:
    """Delete a user and everything of theirs (predictions and their files); how many predictions."""
    with transaction.atomic():
        count = Prediction.objects.filter(owner=user).count()
        user.delete()  # cascades to the predictions; their files go through the delete signal
    return count


def predictions_purge_anonymous(*, batch_size: int = 200) -> int:
    """Delete the predictions of visitors who never signed in, with their files, once they are older than
    `AGEGENDER_ANONYMOUS_RETENTION_DAYS` (0: keep them). Their sessions expire too, after which nobody
    but staff could see them again. Signed-in users' predictions stay until they delete them."""
    days = settings.AGEGENDER_ANONYMOUS_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    expired = Prediction.objects.filter(owner__isnull=True, created_at__lt=cutoff)
    deleted = 0
    while ids := list(expired.values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic():  # locked, so that a row claimed at login meanwhile is kept
            rows = list(
                Prediction.objects.select_for_update()
                .filter(pk__in=ids, owner__isnull=True)
                .values_list("pk")
            )
            Prediction.objects.filter(pk__in=[pk for (pk,) in rows]).delete()  # files: the delete signal
            deleted += len(rows)
    if deleted:
        logger.info("Deleted %d anonymous prediction(s) older than %d days", deleted, days)
    return deleted


def housekeeping() -> dict[str, int]:
    """The hourly upkeep: expired anonymous predictions (with their files), then expired sessions."""
    purged = predictions_purge_anonymous()
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
    return {"anonymous_predictions_deleted": purged}


#: The storage folders of the predictions' files (`Prediction.image`, `.thumbnail`, `.display`).
PREDICTION_FOLDERS = ("uploads", "thumbnails", "display")


def files_orphaned(*, older_than: timedelta) -> list[str]:
    """Stored files of predictions that no row names any more, last written more than `older_than` ago.

    Every way a row is deleted takes its files along (the delete signal), but files outlive their rows
    where that was not so (admin deletes before 2026-11-27), where rows are deleted without signals
    (a queryset `update`, SQL by hand), or where a process dies between storing a file and writing its
    row. The names the rows hold are read first and the files listed after, and a file younger than
    `older_than` is never taken, so an upload or a worker's rendition still on its way to its row is
    left alone."""
    storage = Prediction._meta.get_field("image").storage
    named: set[str] = set()
    for names in Prediction.objects.values_list("image", "thumbnail", "display").iterator(chunk_size=2000):
        named.update(name for name in names if name)
    cutoff = timezone.now() - older_than
    return [
        name
        for folder in PREDICTION_FOLDERS
        for name in _stored_names(storage, folder)
        if name not in named and storage.get_modified_time(name) < cutoff
    ]


def _stored_names(storage: Any, folder: str) -> Iterable[str]:
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:  # nothing ever stored there (a local storage; S3 lists nothing instead)
        return
    for name in sorted(files):
        yield f"{folder}/{name}"
    for sub in sorted(folders):
        yield from _stored_names(storage, f"{folder}/{sub}")


def files_delete_orphaned(*, older_than: timedelta = timedelta(hours=1)) -> int:
    """Delete the files `files_orphaned` finds; returns how many."""
    storage = Prediction._meta.get_field("image").storage
    orphans = files_orphaned(older_than=older_than)
    for name in orphans:
        storage.delete(name)
    if orphans:
        logger.info("Deleted %d stored file(s) that no prediction names", len(orphans))
    return len(orphans)


def predictions_claim(*, session_key: str, user: AbstractBaseUser) -> int:
    """Give the anonymous predictions of a session to the user who just logged in."""
    if not session_key:
        return 0
    return Prediction.objects.filter(owner__isnull=True, session_key=session_key).update(
        owner=user, session_key=""
    )
