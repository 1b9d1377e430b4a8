"""How many photos one client may send an hour (`AGEGENDER_UPLOADS_PER_HOUR`; 0: no limit), counted in
Redis so that every web process and machine shares the count. The site keeps working without Redis:
then nothing is counted (and a warning logged)."""

from __future__ import annotations

import logging
import time
from functools import cache

import redis
from django.conf import settings
from django.http import HttpRequest

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 3600


def client_address(request: HttpRequest) -> str:
    """The client's IP address: REMOTE_ADDR, or behind `AGEGENDER_TRUSTED_PROXIES` proxies the address
    the outermost of them saw (X-Forwarded-For, counted from the right, so a client cannot forge it)."""
    proxies = settings.AGEGENDER_TRUSTED_PROXIES
    if proxies > 0:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


def refuse_upload(request: HttpRequest, photos: int) -> str:
    """Count `photos` against the client's allowance for this hour; "" when allowed, else why not (the
    photos of a refused batch are not counted)."""
    limit = settings.AGEGENDER_UPLOADS_PER_HOUR
    if limit <= 0 or photos <= 0:
        return ""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    key = f"agegender:uploads:{settings.AGEGENDER_QUEUE}:{client_address(request)}:{window}"
    try:
        client = _client(settings.REDIS_URL)
        used = int(client.get(key) or 0)
        if used + photos > limit:
            minutes = max(1, round((WINDOW_SECONDS - now % WINDOW_SECONDS) / 60))
            left = max(0, limit - used)
            return (
                f"Too many photos from your address: at most {limit} an hour, and {left} left this hour. "
                f"Nothing was uploaded; try again in {minutes} minute{'s' if minutes != 1 else ''}."
            )
        with client.pipeline() as pipe:
            pipe.incrby(key, photos).expire(key, WINDOW_SECONDS + 60).execute()
    except redis.RedisError as exc:  # no count without Redis: let the upload through
        logger.warning("Upload rate not counted (%s)", exc)
    return ""
