"""On login, anonymous predictions made in this browser session become the user's."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest

from predictions import services

VISITOR_KEY = "predictions_visitor"


@receiver(user_logged_in, dispatch_uid="predictions_claim_on_login")
def _claim_on_login(sender: object, request: HttpRequest | None, user: object, **kwargs: object) -> None:
    if request is None or not hasattr(request, "session"):
        return
    services.predictions_claim(session_key=request.session.get(VISITOR_KEY, ""), user=user)
