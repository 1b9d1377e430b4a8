"""On login, anonymous predictions made in this browser session become the user's; whenever a prediction
row is deleted, however (its owner, the admin, a deleted account, the purge), its stored files go too."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.http import HttpRequest

from predictions import services
from predictions.models import Prediction

VISITOR_KEY = "predictions_visitor"


@receiver(user_logged_in, dispatch_uid="predictions_claim_on_login")
def _claim_on_login(sender: object, request: HttpRequest | None, user: object, **kwargs: object) -> None:
    if request is None or not hasattr(request, "session"):
        return
    services.predictions_claim(session_key=request.session.get(VISITOR_KEY, ""), user=user)


@receiver(post_delete, sender=Prediction, dispatch_uid="predictions_delete_files")
def _delete_files(sender: object, instance: Prediction, **kwargs: object) -> None:
    services.prediction_files_delete(prediction=instance)
