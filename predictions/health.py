"""Is the service able to work: the database and the broker, and the work waiting (`views.healthz`)."""

from __future__ import annotations

from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, Min, Q
from django.utils import timezone

from predictions.models import Prediction


def service_health(*, broker_url: str, queue: str) -> dict:
    """The database and the broker, each "ok" or why not, and the work waiting (see `views.healthz`)."""
    health: dict = {"status": "ok", "database": "ok", "broker": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        queued = Q(status=Prediction.Status.QUEUED)
        now = timezone.now()
        # Stuck: what the sweep should have moved by now (a worker that died, a job never handed over).
        overdue = now - timedelta(
            seconds=settings.AGEGENDER_SEND_GRACE_SECONDS + settings.AGEGENDER_SWEEP_SECONDS
        )
        stuck = Q(status=Prediction.Status.PROCESSING, lease_until__lt=now) | Q(
            queued, enqueued_at__isnull=True, created_at__lt=overdue
        )
        work = Prediction.objects.aggregate(
            queued=Count("pk", filter=queued),
            processing=Count("pk", filter=Q(status=Prediction.Status.PROCESSING)),
            stuck=Count("pk", filter=stuck),
            oldest=Min("created_at", filter=queued),
        )
        oldest = work.pop("oldest")
        health.update(work, oldest_queued_seconds=round((now - oldest).total_seconds()) if oldest else 0)
        if work["stuck"]:
            health["status"] = "degraded"
    except Exception as exc:  # any database error: the site cannot work
        health.update(status="down", database=f"unreachable: {type(exc).__name__}")
    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        health["broker_queue_length"] = client.llen(queue)
    except Exception as exc:  # the broker away: uploads still work, jobs wait in the database
        health["broker"] = f"unreachable: {type(exc).__name__}"
        if health["status"] != "down":
            health["status"] = "degraded"
    return health
