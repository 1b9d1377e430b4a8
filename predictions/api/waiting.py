"""Waiting in a request for a prediction's job to end: `?wait=` on the API, and `/analyze`."""

from __future__ import annotations

import time
import uuid

from predictions import services
from predictions.models import Prediction

#: The longest a request may wait for a job (seconds): `?wait=` is capped at this.
MAX_WAIT_SECONDS = 30


def prediction_wait(prediction: Prediction, *, seconds: float) -> Prediction:
    """The prediction as it is once its job has ended, or after `seconds`, whichever comes first. Reads
    the row again, every 0.1 s at first and every 0.5 s later (a job takes a second or more); a job the
    broker never got is sent again, as the status endpoint does."""
    deadline = time.monotonic() + max(0.0, seconds)
    pause = 0.1
    while not prediction.is_finished and time.monotonic() < deadline:
        if services.prediction_may_be_unsent(prediction):
            services.predictions_send_unsent(prediction_ids=[prediction.id])
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.5)
        prediction = _reload(prediction.id) or prediction
    return prediction


def _reload(prediction_id: uuid.UUID) -> Prediction | None:
    return Prediction.objects.filter(pk=prediction_id).prefetch_related("faces").first()
