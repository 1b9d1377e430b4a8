"""The engine, loaded once per worker process on first use (never per task, never at import time).

Two settings let a worker that shares its host with the web server leave it a core (`scripts/run` or the
deployment sets them):
- `AGEGENDER_TF_THREADS`: the model's threads, on LiteRT (`ml.runtime`) or TensorFlow (intra-op; inter-op:
  1) where TensorFlow is loaded; unset, one per core;
- `AGEGENDER_WORKER_NICE`: added to the worker process's niceness (`os.nice`), so that the web server's
  requests are scheduled first when both want the CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml import Predictor

logger = logging.getLogger(__name__)

_predictor: Predictor | None = None
_lock = threading.Lock()


def apply_process_settings() -> None:
    """Apply `AGEGENDER_WORKER_NICE` and `AGEGENDER_TF_THREADS` (see the module's docstring) to this
    process; a value that is not a whole number is logged and ignored."""
    for name in ("AGEGENDER_WORKER_NICE", "AGEGENDER_TF_THREADS"):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            logger.warning("%s=%r is not a whole number; ignored", name, raw)
            continue
        if name == "AGEGENDER_WORKER_NICE":
            _renice_every_thread(value)
            continue
        # LiteRT reads it itself (`ml.runtime`); TensorFlow, only where something loads it (the Keras
        # runtime, MTCNN's pyramid), is set as it starts (`ml.runtime.tensorflow`): importing it here
        # would cost a worker serving on LiteRT half a gigabyte for nothing.
        if "tensorflow" in sys.modules:
            from ml.runtime import tensorflow

            tensorflow()


def _renice_every_thread(value: int) -> None:
    """Linux keeps a niceness per thread, and the model is loaded in a thread of its own
    (`preload_in_background`): every thread is reniced, the one that runs the tasks included; threads
    started later inherit it from theirs."""
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: niceness belongs to the process
        os.nice(value)
        return
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + value)


def get_predictor() -> Predictor:
    """The process's one `ml.Predictor`; the first call loads the model (a few seconds)."""
    global _predictor
    if _predictor is None:
        with _lock:
            if _predictor is None:
                from ml import Predictor

                apply_process_settings()
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
