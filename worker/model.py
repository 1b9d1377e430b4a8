"""The engine, loaded once per worker process on first use (never per task, never at import time)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml import Predictor

logger = logging.getLogger(__name__)

_predictor: Predictor | None = None
_lock = threading.Lock()


def get_predictor() -> Predictor:
    """The process's one `ml.Predictor`; the first call loads the model (a few seconds)."""
    global _predictor
    if _predictor is None:
        with _lock:
            if _predictor is None:
                from ml import Predictor

                started = time.perf_counter()
                _predictor = Predictor.load()
                logger.info(
                    "Loaded model %s in %.1f s", _predictor.model_version, time.perf_counter() - started
                )
    return _predictor


def preload_in_background() -> None:
    """Start loading the model without blocking (for `worker_process_init`, which must return fast);
    the first task waits on the lock if the load has not finished yet."""
    threading.Thread(target=get_predictor, name="model-preload", daemon=True).start()
