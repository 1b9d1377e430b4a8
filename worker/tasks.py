"""The prediction task: fetch by id, decode the photo once, run the engine, record faces or a readable
failure; and the periodic upkeep beat runs."""

from __future__ import annotations

import logging
import time
import uuid

from celery import Task, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready
from django.conf import settings

from predictions import jobs, outbox, services
from predictions.models import Prediction
from worker.images import WORK_MAX_SIDE, renditions
from worker.lease import leased
from worker.model import get_predictor, preload_in_background, return_large_blocks_to_the_system

logger = logging.getLogger(__name__)

return_large_blocks_to_the_system()  # this module is imported by worker processes only

PASSING_FAULT = "Something went wrong while processing this photo."
TOO_LONG = "The photo took too long to process."


@worker_process_init.connect
def _preload_model(**kwargs: object) -> None:
    if settings.AGEGENDER_PRELOAD_MODEL:
        preload_in_background()


@worker_ready.connect
def _sweep(**kwargs: object) -> None:
    """A worker starting (after an outage, say) takes back and sends again the jobs nobody holds."""
    try:
        outbox.sweep()
    except Exception:  # the database may be away too; beat's next sweep tries again
        logger.exception("Could not sweep the prediction jobs")


class PredictTask(Task):
    """Retries are declared on the task (`autoretry_for`, `retry_backoff`); these hooks record on the
    row what became of a try: queued again, or failed for good."""

    @property
    def max_retries(self) -> int:  # read per call, so that a test may change the setting
        return settings.AGEGENDER_TASK_RETRIES

    def retry(self, *args, **kwargs):
        try:
            return super().retry(*args, **kwargs)
        except Reject:  # the broker could not take the retry: the outbox sends it once it is back
            jobs.prediction_retry_not_sent(prediction_id=self.request.args[0], job_id=self.request.id)
            raise

    def on_retry(self, exc, task_id, args, kwargs, einfo) -> None:
        logger.warning("Prediction %s failed (%s); it is to be tried again", args[0], exc)
        jobs.prediction_retry_later(prediction_id=args[0], job_id=task_id)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Out of tries, or out of time: its sender may try again, the reason was not the photo."""
        timed_out = isinstance(exc, SoftTimeLimitExceeded)
        jobs.prediction_fail(
            prediction_id=args[0],
            error=TOO_LONG if timed_out else PASSING_FAULT,
            retryable=True,
            job_id=task_id,
        )


@shared_task(
    bind=True,
    base=PredictTask,
    name=settings.AGEGENDER_PREDICT_TASK,
    acks_late=True,  # a job whose worker dies mid-way goes back to the queue ...
    reject_on_worker_lost=True,  # ... instead of being acknowledged as if it had run
    soft_time_limit=settings.AGEGENDER_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.AGEGENDER_TASK_TIME_LIMIT,
    ignore_result=True,
    # Any error but the photo's (storage or database away for a moment, a bug) is tried again later,
    # after AGEGENDER_TASK_RETRY_DELAY seconds, doubling; out of tries, `on_failure` marks it failed.
    autoretry_for=(Exception,),
    dont_autoretry_for=(SoftTimeLimitExceeded,),
    retry_backoff=settings.AGEGENDER_TASK_RETRY_DELAY,
    retry_backoff_max=600,
    retry_jitter=False,
)
def predict(self: Task, prediction_id: str) -> str:
    """Estimate age and gender for every face of one prediction. A message that is no longer the row's
    (sent again since) does nothing; a job run twice records one result (`predictions.jobs`). A photo
    the engine cannot read fails for good, with the engine's reason."""
    try:
        uuid.UUID(str(prediction_id))
    except ValueError:
        logger.warning("Ignoring a job with a malformed prediction id %r", prediction_id)
        return "ignored"
    job_id = self.request.id
    prediction = jobs.prediction_start(prediction_id=prediction_id, job_id=job_id)
    if prediction is None:
        logger.info("Prediction %s: gone, finished or sent again since; nothing to do", prediction_id)
        return "gone"
    with leased(prediction_id, job_id):
        return _run(prediction, job_id)


def _run(prediction: Prediction, job_id: str | None) -> str:
    from ml import ImageError  # light: `ml` imports TensorFlow only in Predictor.load()
    from ml.images import decode_photo

    try:
        with prediction.image.open("rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        jobs.prediction_fail(
            prediction_id=prediction.id, error="The uploaded photo is missing from storage.", job_id=job_id
        )
        return "failed"

    predictor = get_predictor()
    started = time.perf_counter()
    try:
        photo = decode_photo(data, max_side=WORK_MAX_SIDE)  # the one decode: engine and renditions
        del data
        faces = predictor.predict(photo, whole_image_fallback=prediction.as_one_face)
    except ImageError as exc:
        jobs.prediction_fail(
            prediction_id=prediction.id, error=str(exc), model_version=predictor.model_version, job_id=job_id
        )
        return "failed"
    inference_ms = round((time.perf_counter() - started) * 1000)

    made = renditions(photo)
    done = jobs.prediction_finish(
        job_id=job_id,
        prediction_id=prediction.id,
        faces=faces,
        model_version=predictor.model_version,
        image_width=photo.width,
        image_height=photo.height,
        inference_ms=inference_ms,
        thumbnail_jpeg=made.thumbnail_jpeg,
        display_jpeg=made.display_jpeg,
    )
    return "done" if done is not None else "gone"


@shared_task(name=settings.AGEGENDER_SWEEP_TASK, ignore_result=True)
def sweep() -> int:
    """Periodic (beat): take back the jobs of dead workers, send the jobs nobody holds."""
    return outbox.sweep()


@shared_task(name=settings.AGEGENDER_HOUSEKEEPING_TASK, ignore_result=True)
def housekeeping() -> dict[str, int]:
    """Periodic (beat): delete expired anonymous predictions with their files, and expired sessions."""
    return services.housekeeping()


@shared_task(name=settings.AGEGENDER_ORPHANED_FILES_TASK, ignore_result=True)
def delete_orphaned_files() -> int:
    """Periodic (beat, daily): delete stored files that no prediction names any more."""
    return services.files_delete_orphaned()
