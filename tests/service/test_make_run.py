"""`make run` (scripts/run) supervises worker, beat and web each on its own: a worker killed is started
again while the web goes on answering; exactly one beat; a stop leaves nothing running. Real processes,
a private Redis and a private state folder (the model is not loaded: the worker's jobs are not run)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.service.drill_site import ROOT, Redis, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on the PATH"),
]


def _session(sid: int) -> dict[int, str]:
    """Every live process of the session `sid` (scripts/run's): pid → command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return found


def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_make_run_restarts_a_dead_worker_keeps_the_web_runs_one_beat_and_leaves_nothing(tmp_path):
    redis = Redis(tmp_path)
    port = free_port()
    var = tmp_path / "var"
    env = {
        **os.environ,
        "PY": sys.executable,
        "PORT": str(port),
        "REDIS_URL": redis.url,
        "AGEGENDER_VAR_DIR": str(var),
        "AGEGENDER_PRELOAD_MODEL": "0",
    }
    env.pop("DATABASE_URL", None)  # the embedded default: SQLite under the state folder
    run = subprocess.Popen(
        [str(ROOT / "scripts" / "run")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ctl = [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(var / "supervisord.conf")]

    def pid_of(program: str) -> int:
        result = subprocess.run([*ctl, "pid", program], capture_output=True, text=True)
        return int(result.stdout.strip()) if result.stdout.strip().isdigit() else 0

    try:
        health = f"http://127.0.0.1:{port}/healthz"
        _until(lambda: _answers(health), 120, "the web answering")
        worker = _until(lambda: pid_of("worker"), 60, "the worker running")
        beats = [cmd for cmd in _session(run.pid).values() if " beat " in f"{cmd} "]
        assert len(beats) == 1, beats
        # gunicorn serves the pages' script and style itself (WhiteNoise, from static/ in development)
        script = urllib.request.urlopen(f"http://127.0.0.1:{port}/static/agegender/app.js", timeout=10)
        assert script.status == 200 and b"poll" in script.read()
        assert any("gunicorn" in cmd for cmd in _session(run.pid).values())

        os.kill(worker, signal.SIGKILL)
        assert _answers(health)  # the web goes on
        restarted = _until(lambda: (pid := pid_of("worker")) not in (0, worker) and pid, 60, "a new worker")
        assert restarted != worker and _answers(health)
        assert len([cmd for cmd in _session(run.pid).values() if " beat " in f"{cmd} "]) == 1

        run.send_signal(signal.SIGINT)  # Ctrl-C
        run.wait(timeout=90)
        _until(lambda: not _session(run.pid), 30, "every process gone")
    finally:
        for pid in _session(run.pid):
            os.kill(pid, signal.SIGKILL)
        redis.stop()
