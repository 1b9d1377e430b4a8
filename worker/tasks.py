"""The prediction task: fetch by id, run the engine, record faces or a readable failure."""

from __future__ import annotations

import logging
import time
import uuid

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready
from django.conf import settings

from predictions import services
from predictions.models import Prediction
from worker.images import upright_size_and_thumbnail
from worker.model import get_predictor, preload_in_background

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _preload_model(**kwargs: object) -> None:
    if settings.AGEGENDER_PRELOAD_MODEL:
        preload_in_background()


@worker_ready.connect
def _send_unsent(**kwargs: object) -> None:
    """A worker starting (after an outage, say) sends again the jobs the broker never got or lost."""
    try:
        services.predictions_send_unsent()
    except Exception:  # the database may be away too; the status page's polling will try again
        logger.exception("Could not look for unsent prediction jobs")


@shared_task(
    bind=True,
    name=settings.AGEGENDER_PREDICT_TASK,
    acks_late=True,  # a job whose worker dies mid-way goes back to the queue ...
    reject_on_worker_lost=True,  # ... instead of being acknowledged as if it had run
    soft_time_limit=settings.AGEGENDER_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.AGEGENDER_TASK_TIME_LIMIT,
    ignore_result=True,
)
def predict(self: Task, prediction_id: str) -> str:
    """Estimate age and gender for every face of one prediction. Safe to run twice (faces are replaced).

    A photo the engine cannot read fails for good, with the engine's reason. Any other error (storage or
    database away for a moment, a bug) is tried again `AGEGENDER_TASK_RETRIES` times, later, before the
    photo is marked failed; such a failure, and a photo that took too long, its sender may try again."""
    try:
        uuid.UUID(str(prediction_id))
    except ValueError:
        logger.warning("Ignoring a job with a malformed prediction id %r", prediction_id)
        return "ignored"
    try:
        prediction = services.prediction_start(prediction_id=prediction_id)
    except Exception as exc:  # the database away: nothing can be recorded, so only the broker keeps the job
        if self.request.retries >= settings.AGEGENDER_TASK_RETRIES:
            raise  # logged by Celery; the row stays queued and is sent again after AGEGENDER_RESEND_AFTER
        logger.warning("Could not start prediction %s (%s); it is to be tried again", prediction_id, exc)
        raise self.retry(countdown=_retry_delay(self), max_retries=settings.AGEGENDER_TASK_RETRIES) from exc
    if prediction is None:
        logger.info("Prediction %s is gone (deleted before it ran); nothing to do", prediction_id)
        return "gone"
    try:
        return _run(prediction)
    except SoftTimeLimitExceeded:
        services.prediction_fail(
            prediction_id=prediction_id, error="The photo took too long to process.", retryable=True
        )
        return "failed"
    except Exception:
        tries_left = settings.AGEGENDER_TASK_RETRIES - self.request.retries
        logger.exception(
            "Prediction %s failed unexpectedly (%s)",
            prediction_id,
            f"to be tried again, {tries_left} time(s) more" if tries_left > 0 else "no tries left",
        )
        if tries_left > 0 and _retry_later(self, prediction_id):
            return "retrying"
        services.prediction_fail(
            prediction_id=prediction_id,
            error="Something went wrong while processing this photo.",
            retryable=True,
        )
        return "failed"


def _retry_delay(task: Task) -> int:
    """Seconds before the next try: AGEGENDER_TASK_RETRY_DELAY, doubled for each try already made."""
    return settings.AGEGENDER_TASK_RETRY_DELAY * 2**task.request.retries


def _retry_later(task: Task, prediction_id: str) -> bool:
    """Hand the job back to the broker, to run again after a delay that doubles with each try. False when
    the row is gone. A broker that cannot take it leaves the job unsent, for `send_unsent` to send."""
    if services.prediction_retry_later(prediction_id=prediction_id) is None:
        return False
    try:
        task.retry(countdown=_retry_delay(task), max_retries=settings.AGEGENDER_TASK_RETRIES, throw=False)
    except Exception as exc:
        logger.warning(
            "Could not queue prediction %s again (%s); it stays queued, unsent", prediction_id, exc
        )
        services.prediction_retry_not_sent(prediction_id=prediction_id)
    return True


@shared_task(name=settings.AGEGENDER_SEND_UNSENT_TASK, ignore_result=True)
def send_unsent() -> int:
    """Periodic (beat): send again the jobs the broker never got, or lost."""
    return services.predictions_send_unsent()


@shared_task(name=settings.AGEGENDER_HOUSEKEEPING_TASK, ignore_result=True)
def housekeeping() -> dict[str, int]:
    """Periodic (beat): delete expired anonymous predictions with their files, and expired sessions."""
    return services.housekeeping()


@shared_task(name=settings.AGEGENDER_ORPHANED_FILES_TASK, ignore_result=True)
def delete_orphaned_files() -> int:
    """Periodic (beat, daily): delete stored files that no prediction names any more."""
    return services.files_delete_orphaned()


def _run(prediction: Prediction) -> str:
    from ml import ImageError  # light: `ml` imports TensorFlow only in Predictor.load()

    try:
        with prediction.image.open("rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        services.prediction_fail(
            prediction_id=prediction.id, error="The uploaded photo is missing from storage."
        )
        return "failed"

    predictor = get_predictor()
    started = time.perf_counter()
    try:
        faces = predictor.predict(data, whole_image_fallback=prediction.as_one_face)
    except ImageError as exc:
        services.prediction_fail(
            prediction_id=prediction.id, error=str(exc), model_version=predictor.model_version
        )
        return "failed"
    inference_ms = round((time.perf_counter() - started) * 1000)

    upright = upright_size_and_thumbnail(data)
    done = services.prediction_finish(
        prediction_id=prediction.id,
        faces=[face.to_dict() for face in faces],
        model_version=predictor.model_version,
        image_width=upright.width,
        image_height=upright.height,
        inference_ms=inference_ms,
        thumbnail_jpeg=upright.thumbnail_jpeg,
        display_jpeg=upright.display_jpeg,
    )
    return "done" if done is not None else "gone"
