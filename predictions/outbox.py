"""The outbox: every prediction job reaches the broker through here. A row is the job; the broker only
carries it. A job the broker could not take (away when the photo was queued) or has lost (a Redis
restarted without persistence) is sent again by `send_unsent`, which beat runs every minute and every
worker runs as it starts; nothing else sends again (a page's GET writes nothing)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from predictions.models import Prediction

logger = logging.getLogger(__name__)

#: Until when (`time.monotonic()`) this process leaves the broker alone after failing to reach it.
_broker_away_until = 0.0

#: A queued row younger than this may still be on its way to the broker (its commit's send running).
UNSENT_GRACE = timedelta(seconds=10)


def send(prediction_id: uuid.UUID | str) -> bool:
    """Hand the job to the broker by task name (the web never imports the worker) and note when. A broker
    that cannot be reached is logged, not raised: the photo and its row are kept, queued, and the job is
    sent by `send_unsent` once the broker is back.

    Reaching for a broker that is away takes time (0.6 s when the connection is refused, seconds more
    when it times out), so after a failure this process does not try again for
    `AGEGENDER_BROKER_RETRY_PAUSE` seconds: an upload of 20 photos pays for one attempt, not one each."""
    global _broker_away_until
    if time.monotonic() < _broker_away_until:
        return False
    try:
        current_app.send_task(
            settings.AGEGENDER_PREDICT_TASK, args=[str(prediction_id)], queue=settings.AGEGENDER_QUEUE
        )
    except Exception as exc:  # kombu's OperationalError, a timeout, a refused login: whatever the broker says
        _broker_away_until = time.monotonic() + settings.AGEGENDER_BROKER_RETRY_PAUSE
        logger.warning(
            "Could not queue prediction %s (%s); it stays queued, to be sent again", prediction_id, exc
        )
        return False
    # Whatever its status now: a fast worker may already have started it (found by the outage test).
    Prediction.objects.filter(pk=prediction_id).update(enqueued_at=timezone.now())
    return True


def send_on_commit(prediction_id: uuid.UUID) -> None:
    """Send the job once the row is visible to the worker."""
    transaction.on_commit(lambda: send(prediction_id))


def _unsent_cutoffs() -> tuple[datetime, datetime]:
    """A queued job counts as unsent when created before the first time and never handed over, or as
    lost when handed over before the second."""
    now = timezone.now()
    return now - UNSENT_GRACE, now - timedelta(seconds=settings.AGEGENDER_RESEND_AFTER)


def send_unsent(*, prediction_ids: Iterable[uuid.UUID] | None = None, limit: int = 500) -> int:
    """Send again the jobs of queued predictions the broker never got (it could not be reached when they
    were queued), and of those queued so long ago (`AGEGENDER_RESEND_AFTER`) that the broker must have
    lost them. Returns how many were handed over. The job is idempotent, so a job sent twice only costs a
    second reading of the photo."""
    created_before, sent_before = _unsent_cutoffs()
    stale = Prediction.objects.filter(status=Prediction.Status.QUEUED).filter(
        Q(enqueued_at__isnull=True, created_at__lt=created_before) | Q(enqueued_at__lt=sent_before)
    )
    if prediction_ids is not None:
        stale = stale.filter(pk__in=list(prediction_ids))
    sent = 0
    for prediction_id in stale.order_by("created_at").values_list("pk", flat=True)[:limit]:
        if not send(prediction_id):
            break  # the broker is still away: the rest waits for the next call
        sent += 1
    if sent:
        logger.info("Sent %d queued prediction job(s) again", sent)
    return sent
