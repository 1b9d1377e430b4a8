"""Creating, finding and revoking API tokens (the only writes to `ApiToken`)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from predictions.api.models import ApiToken, token_digest

#: Every key starts so, which lets secret scanners (and people) recognise a leaked one.
KEY_PREFIX = "ag_"
#: `last_used_at` is written at most this often per token (not one write per request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """A new token for `user`; returns it and its key, which is shown once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=(name.strip() or "token")[:100], prefix=key[:10], digest=token_digest(key)
    )
    return token, key


def token_find(key: str) -> ApiToken | None:
    """The live token with this key (its user active), or None; notes when it was last used."""
    token = (
        ApiToken.objects.select_related("user").filter(digest=token_digest(key), user__is_active=True).first()
    )
    if token is not None:
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def token_revoke(*, user: AbstractBaseUser, token_id: int) -> bool:
    """Revoke (delete) one of `user`'s tokens; False when it is not theirs or already gone."""
    return ApiToken.objects.filter(user=user, pk=token_id).delete()[0] > 0
