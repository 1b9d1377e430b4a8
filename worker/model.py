"""The engine, loaded once per worker process on first use (never per task, never at import time)."""

from __future__ import annotations

import contextlib
import ctypes
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


#: glibc's `mallopt` parameter for the size above which a block is its own mapping, freed back to the system.
_M_MMAP_THRESHOLD = -3


def return_large_blocks_to_the_system() -> None:
    """A decoded photo is hundreds of MB in blocks of a few MB. glibc raises its mmap threshold after
    the first such block is freed, and from then on keeps them in the heap: the worker stays as large as
    its largest photo. A fixed threshold of 1 MB returns them once freed (`bench/worker_memory.py`:
    1.20 GB → 1.08 GB at the peak of a 49-MP PNG, before the one-pass reduction). Not glibc: nothing
    to do."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def preload_in_background() -> None:
    """Start loading the model without blocking (for `worker_process_init`, which must return fast);
    the first task waits on the lock if the load has not finished yet."""
    threading.Thread(target=get_predictor, name="model-preload", daemon=True).start()
