"""How much one client may send an hour: photos (`AGEGENDER_UPLOADS_PER_HOUR`) and megapixels
(`AGEGENDER_MEGAPIXELS_PER_HOUR`, what a photo costs the worker); 0 turns either off. Counted in Redis so
that every web process and machine shares the count, by one Lua script that checks and adds both counts
at once: two uploads at the same moment cannot both take the last photos left. Only accepted photos are
counted, and a refused batch counts nothing. The site keeps working without Redis: then nothing is
counted (and a warning logged).

    take(client_address(request), photos=3, pixels=36_000_000)  ->  Allowed | Refused
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from django.http import HttpRequest

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 3600

#: KEYS[1]: the client's counts this hour (a hash: photos, pixels). ARGV: photos and pixels asked for,
#: their limits (0: none), the key's lifetime, and 1 to take them or 0 only to look. Returns whether they
#: fit, and the photos and pixels used before.
_TAKE = """
local photos, pixels = tonumber(ARGV[1]), tonumber(ARGV[2])
local photo_limit, pixel_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local used = redis.call('HMGET', KEYS[1], 'photos', 'pixels')
local used_photos, used_pixels = tonumber(used[1] or '0'), tonumber(used[2] or '0')
local fits = (photo_limit <= 0 or used_photos + photos <= photo_limit)
  and (pixel_limit <= 0 or used_pixels + pixels <= pixel_limit)
if fits and ARGV[6] == '1' then
  redis.call('HINCRBY', KEYS[1], 'photos', photos)
  redis.call('HINCRBY', KEYS[1], 'pixels', pixels)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
end
return {fits and 1 or 0, used_photos, used_pixels}
"""


@dataclass(frozen=True)
class Allowed:
    photos_left: int | None  # after these; None: no limit (or no Redis)
    pixels_left: int | None


@dataclass(frozen=True)
class Refused:
    message: str  # for the person who sent them: the limit, what is left, when to try again
    retry_after: int  # seconds until this hour's allowance is renewed (a Retry-After header)
    photos_left: int | None
    pixels_left: int | None


def client_address(request: HttpRequest) -> str:
    """The client's IP address: REMOTE_ADDR, or behind `AGEGENDER_TRUSTED_PROXIES` proxies the address
    the outermost of them saw (X-Forwarded-For, counted from the right, so a client cannot forge it)."""
    proxies = settings.AGEGENDER_TRUSTED_PROXIES
    if proxies > 0:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def login_client_address(request: HttpRequest) -> str | None:
    """`client_address` for django-axes, whose log keeps an IP address column (PostgreSQL checks it):
    None where the request carries no address (a test client's login, a management command)."""
    address = client_address(request)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


@cache
def _script(url: str) -> redis.commands.core.Script:
    return _client(url).register_script(_TAKE)


def take(client: str, photos: int, pixels: int = 0, *, only_look: bool = False) -> Allowed | Refused:
    """Count `photos` of `pixels` in all against `client`'s allowance for this hour, if they fit in both
    (else count nothing). `only_look`: say whether they would fit, counting nothing."""
    photo_limit = max(0, settings.AGEGENDER_UPLOADS_PER_HOUR)
    pixel_limit = max(0, settings.AGEGENDER_MEGAPIXELS_PER_HOUR) * 1_000_000
    if (not photo_limit and not pixel_limit) or photos <= 0:
        return Allowed(photos_left=None, pixels_left=None)
    now = time.time()
    key = f"agegender:uploads:{settings.AGEGENDER_QUEUE}:{client}:{int(now // WINDOW_SECONDS)}"
    retry_after = seconds_to_next_hour(now)
    try:
        args = [photos, pixels, photo_limit, pixel_limit, WINDOW_SECONDS + 60, 0 if only_look else 1]
        fits, used_photos, used_pixels = _script(settings.REDIS_URL)(keys=[key], args=args)
    except redis.RedisError as exc:  # no count without Redis: let the upload through
        logger.warning("Upload allowance not counted (%s)", exc)
        return Allowed(photos_left=None, pixels_left=None)
    photos_left = max(0, photo_limit - used_photos) if photo_limit else None
    pixels_left = max(0, pixel_limit - used_pixels) if pixel_limit else None
    if fits:
        taken = 0 if only_look else 1
        return Allowed(
            photos_left=None if photos_left is None else photos_left - photos * taken,
            pixels_left=None if pixels_left is None else pixels_left - pixels * taken,
        )
    return Refused(
        _why(photos, pixels, photos_left, pixels_left, retry_after), retry_after, photos_left, pixels_left
    )


def seconds_to_next_hour(now: float | None = None) -> int:
    """When this hour's allowance is renewed (a Retry-After header's value)."""
    now = time.time() if now is None else now
    return max(1, int(WINDOW_SECONDS - now % WINDOW_SECONDS))


def _why(photos: int, pixels: int, photos_left: int | None, pixels_left: int | None, retry_after: int) -> str:
    minutes = max(1, round(retry_after / 60))
    later = f"Nothing was uploaded; try again in {minutes} minute{'s' if minutes != 1 else ''}."
    if photos_left is not None and photos > photos_left:
        limit = settings.AGEGENDER_UPLOADS_PER_HOUR
        return (
            f"Too many photos from your address: at most {limit} an hour, and {photos_left} left this "
            f"hour. {later}"
        )
    limit = settings.AGEGENDER_MEGAPIXELS_PER_HOUR
    return (
        f"Too many pixels from your address: at most {limit} megapixels an hour, and "
        f"{(pixels_left or 0) // 1_000_000} left this hour; these photos have {-(-pixels // 1_000_000)}. "
        f"Send smaller photos, or {later[0].lower()}{later[1:]}"
    )


def refuse_upload(request: HttpRequest, photos: int, pixels: int = 0, *, only_look: bool = False) -> str:
    """`take` for a web request: "" when allowed (and counted, unless `only_look`), else why not."""
    outcome = take(client_address(request), photos, pixels, only_look=only_look)
    return outcome.message if isinstance(outcome, Refused) else ""
