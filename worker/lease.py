"""A worker renews the lease of the job it runs while it works (`Prediction.lease_until`), from a thread
beside the job: a worker that dies stops renewing it, and the outbox's sweep takes the job back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

from predictions import jobs

logger = logging.getLogger(__name__)


def _renew(prediction_id: str, job_id: str | None, stop: threading.Event) -> None:
    try:
        while not stop.wait(settings.AGEGENDER_LEASE_SECONDS / 3):
            try:
                if not jobs.prediction_renew_lease(prediction_id=prediction_id, job_id=job_id):
                    return  # taken back, or finished: nothing to hold
            except Exception as exc:  # the database away for a moment: the next beat tries again
                logger.warning("Could not renew the lease of prediction %s (%s)", prediction_id, exc)
    finally:
        connection.close()  # this thread's own connection


@contextmanager
def leased(prediction_id: str, job_id: str | None) -> Iterator[None]:
    """Keep renewing the job's lease until the block ends."""
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(prediction_id, job_id, stop), name=f"lease-{prediction_id}", daemon=True
    )
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=10)
