"""The hourly allowance of photos (`AGEGENDER_UPLOADS_PER_HOUR`), counted per token for the API: the
site's own counter (`predictions.ratelimit`), answered as DRF's 429 with `Retry-After`."""

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


def seconds_until_allowance_renews() -> int:
    window = getattr(ratelimit, "WINDOW_SECONDS", 3600)
    return max(1, math.ceil(window - time.time() % window))


def charge_allowance(request: Request, photos: int) -> None:
    """Count `photos` against the allowance, or raise `Throttled` (nothing counted, nothing stored)."""
    refusal = ratelimit.refuse_upload(request._request, photos, who=allowance_holder(request))
    if refusal:
        if allowance_holder(request):
            refusal = refusal.replace("from your address", "with this token")
        raise Throttled(wait=seconds_until_allowance_renews(), detail=refusal)
