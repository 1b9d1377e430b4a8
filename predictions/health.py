"""Is the service able to work: the database and the broker, and the work waiting (`views.healthz`)."""

from __future__ import annotations

import redis
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
        work = Prediction.objects.aggregate(
            queued=Count("pk", filter=queued),
            processing=Count("pk", filter=Q(status=Prediction.Status.PROCESSING)),
            oldest=Min("created_at", filter=queued),
        )
        oldest = work.pop("oldest")
        health.update(
            work, oldest_queued_seconds=round((timezone.now() - oldest).total_seconds()) if oldest else 0
        )
    except Exception as exc:  # any database error: the site cannot work
        health.update(status="down", database=f"unreachable: {type(exc).__name__}")
    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        health["broker_queue_length"] = client.llen(queue)
    except Exception as exc:  # the broker away: uploads still work, jobs wait in the database
        health["broker"] = f"unreachable: {type(exc).__name__}"
        if health["status"] == "ok":
            health["status"] = "degraded"
    return health
