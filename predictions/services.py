"""Writes: every change to predictions goes through these functions (views, admin and worker call them)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from predictions import files, outbox
from predictions.files import files_delete_orphaned, files_orphaned  # noqa: F401 (their old home)
from predictions.jobs import (  # noqa: F401 (their old home)
    prediction_fail,
    prediction_finish,
    prediction_start,
)
from predictions.models import Prediction, in_reading_order  # noqa: F401 (its old home)
from predictions.uploads import CheckedImage

logger = logging.getLogger(__name__)

#: Their old names, for callers from before the outbox.
predictions_send_unsent = outbox.send_unsent
_send = outbox.send


def prediction_create(
    *, upload: UploadedFile, checked: CheckedImage, owner: AbstractBaseUser | None, session_key: str
) -> Prediction:
    """Store the photo and create its row, queued; either both happen or neither does."""
    if owner is None and not session_key:
        raise ValueError("a prediction needs an owner or a session key")
    prediction = Prediction(
        job_id=uuid.uuid4(),
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
            outbox.send_on_commit(prediction.id, prediction.job_id)
    except BaseException:
        prediction.image.storage.delete(prediction.image.name)  # no file without a row
        raise
    return prediction


def _requeue(prediction_id: uuid.UUID, **changes: Any) -> None:
    """Queue a prediction's job again, from the start, as a new message (a worker still on the old one
    can no longer record its result); the worker replaces its faces."""
    job_id = uuid.uuid4()
    Prediction.objects.filter(pk=prediction_id).update(
        status=Prediction.Status.QUEUED,
        error="",
        retryable=False,
        job_id=job_id,
        enqueued_at=None,
        started_at=None,
        finished_at=None,
        lease_until=None,
        **changes,
    )
    outbox.send_on_commit(prediction_id, job_id)


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
    files.delete_on_commit([prediction.image.name, prediction.thumbnail.name, prediction.display.name])


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


def predictions_claim(*, session_key: str, user: AbstractBaseUser) -> int:
    """Give the anonymous predictions of a session to the user who just logged in."""
    if not session_key:
        return 0
    return Prediction.objects.filter(owner__isnull=True, session_key=session_key).update(
        owner=user, session_key=""
    )
