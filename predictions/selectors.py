"""Reads: who may see which predictions."""

from __future__ import annotations

import uuid

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce

from predictions.models import Prediction


def _owned_by(*, user: AbstractBaseUser | AnonymousUser, session_key: str) -> Q:
    if user.is_authenticated:
        return Q(owner=user)
    if session_key:
        return Q(owner__isnull=True, session_key=session_key)
    return Q(pk__in=[])


def prediction_is_owned_by(
    prediction: Prediction, *, user: AbstractBaseUser | AnonymousUser, session_key: str
) -> bool:
    """`_owned_by` for a prediction already loaded: may this viewer change it (no query)."""
    if user.is_authenticated:
        return prediction.owner_id == user.pk
    return bool(session_key) and prediction.owner_id is None and prediction.session_key == session_key


def prediction_list_for_viewer(
    *, user: AbstractBaseUser | AnonymousUser, session_key: str
) -> QuerySet[Prediction]:
    """The viewer's own predictions, newest first; their faces are fetched with them (one query more,
    only when the rows themselves are read: not for a count or a delete)."""
    return (
        Prediction.objects.filter(_owned_by(user=user, session_key=session_key))
        .prefetch_related("faces")
        .order_by("-created_at")
    )


def _readable_by(*, user: AbstractBaseUser | AnonymousUser, session_key: str, for_change: bool) -> Q:
    """The owner's rule; staff may also read (not change) any prediction."""
    if not for_change and getattr(user, "is_staff", False):
        return Q()
    return _owned_by(user=user, session_key=session_key)


def prediction_get_for_viewer(
    *,
    prediction_id: uuid.UUID,
    user: AbstractBaseUser | AnonymousUser,
    session_key: str,
    for_change: bool = False,
) -> Prediction | None:
    """The prediction if the viewer owns it (staff may also read any). None otherwise."""
    rule = _readable_by(user=user, session_key=session_key, for_change=for_change)
    return Prediction.objects.filter(rule, pk=prediction_id).prefetch_related("faces").first()


def prediction_list_by_ids_for_viewer(
    *, prediction_ids: list[uuid.UUID], user: AbstractBaseUser | AnonymousUser, session_key: str
) -> list[Prediction]:
    """Those of the given predictions the viewer may read, in the order given, each once."""
    rule = _readable_by(user=user, session_key=session_key, for_change=False)
    found = {
        p.pk: p for p in Prediction.objects.filter(rule, pk__in=prediction_ids).prefetch_related("faces")
    }
    return [found[pk] for pk in dict.fromkeys(prediction_ids) if pk in found]


def prediction_waiting_ahead(prediction: Prediction) -> int | None:
    """For a queued prediction, how many photos (everyone's) the workers will read before it: those
    being read now and those queued before it (by when they were sent, else created). None otherwise."""
    if prediction.status != Prediction.Status.QUEUED:
        return None
    since = prediction.enqueued_at or prediction.created_at
    ahead = Q(status=Prediction.Status.PROCESSING) | Q(status=Prediction.Status.QUEUED, since__lt=since)
    return Prediction.objects.annotate(since=Coalesce("enqueued_at", "created_at")).filter(ahead).count()
