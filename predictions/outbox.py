"""The outbox: every prediction job reaches the broker through here, and comes back through here when
the broker or a worker lost it. The row is the job; the broker only carries it.

`sweep` (beat every `AGEGENDER_SWEEP_SECONDS`, and every worker as it starts) takes back the jobs whose
worker's lease ran out (`Prediction.lease_until`: the worker died) and sends every queued job that
nobody holds: neither the broker's queue nor a live worker (a Redis restarted without its data, a broker
away when the photo was queued). Each send carries a new message id (`Prediction.job_id`), so that a
job sent twice runs once: the worker ignores a message that is not the row's. Nothing else sends again:
a page's GET writes nothing."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta

import redis
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from predictions.models import Prediction

logger = logging.getLogger(__name__)

#: Until when (`time.monotonic()`) this process leaves the broker alone after failing to reach it.
_broker_away_until = 0.0


def send(prediction_id: uuid.UUID | str, job_id: uuid.UUID | str | None = None) -> bool:
    """Hand the job to the broker by task name (the web never imports the worker), as message `job_id`
    (the row's), and note when. A broker that cannot be reached is logged, not raised: the photo and its
    row are kept, queued, and `sweep` sends the job once the broker is back.

    Reaching for a broker that is away takes time (0.6 s when the connection is refused, seconds more
    when it times out), so after a failure this process does not try again for
    `AGEGENDER_BROKER_RETRY_PAUSE` seconds: an upload of 20 photos pays for one attempt, not one each."""
    global _broker_away_until
    if time.monotonic() < _broker_away_until:
        return False
    if job_id is None:
        job_id = Prediction.objects.filter(pk=prediction_id).values_list("job_id", flat=True).first()
    try:
        current_app.send_task(
            settings.AGEGENDER_PREDICT_TASK,
            args=[str(prediction_id)],
            queue=settings.AGEGENDER_QUEUE,
            task_id=str(job_id) if job_id else None,
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


def send_on_commit(prediction_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Send the job once the row (queued, with this `job_id`) is visible to the worker."""
    transaction.on_commit(lambda: send(prediction_id, job_id))


def _held_by_broker() -> set[str] | None:
    """The message ids of this site's jobs that the broker's queue or a live worker holds now; None when
    the broker cannot be asked (then nothing is taken as lost). The queue is read first: a message a
    worker takes meanwhile is then among the workers' (each lists what it runs, has reserved, or waits to
    retry); a message missed all the same is only sent twice, and runs once."""
    try:
        with redis.Redis.from_url(
            current_app.conf.broker_url, socket_connect_timeout=2, socket_timeout=5
        ) as client:
            queued = client.lrange(settings.AGEGENDER_QUEUE, 0, -1)
    except Exception as exc:  # away, or not a Redis: then only jobs never sent are sent
        logger.warning("Could not read the broker's queue (%s); nothing is sent again now", exc)
        return None
    held = set()
    for raw in queued:
        try:
            held.add(json.loads(raw)["headers"]["id"])
        except (ValueError, KeyError, TypeError):
            continue
    inspect = current_app.control.inspect(timeout=0.5)
    for ask in (inspect.active, inspect.reserved, inspect.scheduled):
        for tasks in (ask() or {}).values():
            for task in tasks:
                request = task.get("request", task)  # `scheduled` wraps each request
                held.add(request.get("id"))
    return held


def take_back_expired() -> int:
    """Jobs whose worker's lease ran out go back to the queue, under a new message id (the worker, if
    alive after all, can no longer record a result). How many."""
    expired = Prediction.objects.filter(status=Prediction.Status.PROCESSING).filter(
        Q(lease_until__lt=timezone.now())
        | Q(lease_until__isnull=True, started_at__lt=timezone.now() - _lease())  # rows from before leases
    )
    taken = 0
    for pk, job_id in expired.values_list("pk", "job_id"):
        taken += Prediction.objects.filter(pk=pk, status=Prediction.Status.PROCESSING, job_id=job_id).update(
            status=Prediction.Status.QUEUED,
            job_id=uuid.uuid4(),
            enqueued_at=None,
            started_at=None,
            lease_until=None,
        )
    if taken:
        logger.warning("Took back %d prediction job(s) whose worker stopped renewing its lease", taken)
    return taken


def sweep(*, prediction_ids: Iterable[uuid.UUID] | None = None, limit: int = 500) -> int:
    """Take back expired jobs (`take_back_expired`), then send every queued job nobody holds that was
    created or sent more than `AGEGENDER_SEND_GRACE_SECONDS` ago (of `prediction_ids` only, if given).
    Returns how many were sent."""
    take_back_expired()
    settled = timezone.now() - timedelta(seconds=settings.AGEGENDER_SEND_GRACE_SECONDS)
    queued = Prediction.objects.filter(status=Prediction.Status.QUEUED)
    if prediction_ids is not None:
        queued = queued.filter(pk__in=list(prediction_ids))
    waiting = list(
        queued.filter(Q(enqueued_at__isnull=True, created_at__lt=settled) | Q(enqueued_at__lt=settled))
        .order_by("created_at")
        .values_list("pk", "job_id", "enqueued_at")[:limit]
    )
    if not waiting:
        return 0
    held = _held_by_broker() if any(sent is not None for *_, sent in waiting) else set()
    sent = 0
    for pk, job_id, enqueued_at in waiting:
        if enqueued_at is not None and (held is None or str(job_id) in held):
            continue  # on its way; or the broker cannot say, and a send would fail anyway
        new_id = uuid.uuid4()
        if not Prediction.objects.filter(pk=pk, status=Prediction.Status.QUEUED, job_id=job_id).update(
            job_id=new_id
        ):
            continue  # a worker started it meanwhile
        if not send(pk, new_id):
            break  # the broker is away: the rest waits for the next sweep
        sent += 1
    if sent:
        logger.info("Sent %d queued prediction job(s) that nobody held", sent)
    return sent


def _lease() -> timedelta:
    return timedelta(seconds=settings.AGEGENDER_LEASE_SECONDS)


#: The old name (`manage.py send_unsent`, tests written before the sweep).
send_unsent = sweep
