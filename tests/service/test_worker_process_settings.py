"""A worker sharing its host with the web server can be made to leave it a core (`worker.model`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, os
from worker.model import apply_process_settings
before = os.nice(0)
apply_process_settings()
import sys
loaded = "tensorflow" in sys.modules  # a worker serving on LiteRT does not load it
from ml.runtime import tensorflow  # as the Keras runtime and MTCNN's pyramid load it
tf = tensorflow()
print(json.dumps({"nice": os.nice(0) - before, "loaded": loaded,
                  "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                  "inter": tf.config.threading.get_inter_op_parallelism_threads()}))
"""


def run_probe(**env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_worker_niceness_and_tensorflow_threads_come_from_the_environment():
    assert run_probe(AGEGENDER_WORKER_NICE="5", AGEGENDER_TF_THREADS="1") == {
        "nice": 5,
        "loaded": False,
        "intra": 1,
        "inter": 1,
    }


THREADED_PROBE = """
import json, os, threading
from worker.model import apply_process_settings
before = os.nice(0)
loader = threading.Thread(target=apply_process_settings)  # as `preload_in_background` loads the model
loader.start()
loader.join()
print(json.dumps({"nice": os.nice(0) - before}))
"""


def test_niceness_set_while_loading_in_another_thread_holds_for_the_thread_running_tasks():
    done = subprocess.run(
        [sys.executable, "-c", THREADED_PROBE],
        cwd=ROOT,
        env={**os.environ, "AGEGENDER_WORKER_NICE": "7", "AGEGENDER_TF_THREADS": ""},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"nice": 7}


def test_unset_or_malformed_settings_leave_the_process_as_it_was():
    assert run_probe(AGEGENDER_WORKER_NICE="", AGEGENDER_TF_THREADS="many") == {
        "nice": 0,
        "loaded": False,
        "intra": 0,
        "inter": 0,
    }
