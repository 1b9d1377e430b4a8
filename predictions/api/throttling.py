"""The hourly allowance (`AGEGENDER_UPLOADS_PER_HOUR`), counted per token for the API by the site's own
counter (`predictions.ratelimit`) and answered as DRF's 429 with `Retry-After`. Only accepted photos are
counted, as on the site."""

from __future__ import annotations

import math
import time

from rest_framework.exceptions import Throttled
from rest_framework.request import Request

from predictions import ratelimit
from predictions.api.models import ApiToken


def allowance_holder(request: Request) -> str:
    """Whose allowance a request spends: its token's; a signed-in session's, its address's (as the site)."""
    if isinstance(request.auth, ApiToken):
        return f"token-{request.auth.pk}"
    return ""


class _AddressOnly:
    """A request whose address is `holder`, for a counter that keys by address only."""

    headers: dict[str, str] = {}

    def __init__(self, holder: str) -> None:
        self.META = {"REMOTE_ADDR": holder}


def charge_allowance(request: Request, photos: int, pixels: int = 0) -> None:
    """Count `photos` (of `pixels` in all) against the allowance, or raise `Throttled` (nothing counted;
    the caller then stores nothing)."""
    holder = allowance_holder(request) or ratelimit.client_address(request._request)
    take = getattr(ratelimit, "take", None)
    if take is not None:  # the counter of photos and megapixels, checked and counted at once
        outcome = take(holder, photos, pixels)
        refusal, wait = getattr(outcome, "message", ""), getattr(outcome, "retry_after", 0)
    else:  # the counter of photos only, of a request's address (before `take`): given the holder as one
        refusal = ratelimit.refuse_upload(_AddressOnly(holder), photos)
        window = ratelimit.WINDOW_SECONDS
        wait = math.ceil(window - time.time() % window)
    if refusal:
        if allowance_holder(request):
            refusal = refusal.replace("from your address", "with this token")
        raise Throttled(wait=max(1, wait), detail=refusal)
