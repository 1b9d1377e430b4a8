"""The API on a live server with the real worker: every example of docs/api.md (curl and Python
`requests`) runs as written, and schemathesis tests the API against its own OpenAPI document."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from predictions.api.tokens import token_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_BLOCK = re.compile(r"(<!-- example: skip[^>]*-->\n)?```(sh|python)\n(.*?)```", re.DOTALL)


def examples(language: str) -> list[str]:
    return [code for skip, lang, code in _BLOCK.findall(DOCS.read_text()) if lang == language and not skip]


@pytest.fixture
def token() -> str:
    user = get_user_model().objects.create_user("alice", password="a-long-password-1")
    return token_create(user=user, name="docs")[1]


@pytest.fixture
def workdir(tmp_path: Path, astronaut_jpeg: bytes, two_faces_jpeg: bytes) -> Path:
    """The files the examples send."""
    (tmp_path / "portrait.jpg").write_bytes(astronaut_jpeg)
    (tmp_path / "group.jpg").write_bytes(two_faces_jpeg)
    (tmp_path / "notes.txt").write_text("not a photo")
    return tmp_path


def run(command: list[str], *, cwd: Path, env: dict, timeout: float) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[:2]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_curl_examples_of_the_docs_run_as_written(live_server, celery_worker, token, workdir):
    script = "set -euo pipefail\n" + "\n".join(examples("sh"))
    env = {**os.environ, "API": live_server.url, "TOKEN": token}

    output = run(["bash", "-c", script], cwd=workdir, env=env, timeout=180)

    assert len(examples("sh")) >= 4
    assert output.count('"status": "queued"') == 2  # both photos sent
    assert '"status": "done"' in output and '"gender": "female"' in output  # waited for the portrait
    assert re.search(r'"count": [12],', output)  # listed: the portrait is done, the group may be
    assert "\n204\n" in output  # deleted
    assert output.count('"dominant_gender":"Woman"') == 2  # /analyze: the group's two faces


@pytest.mark.parametrize("index", [0, 1])
def test_the_python_examples_of_the_docs_run_as_written(live_server, celery_worker, token, workdir, index):
    code = examples("python")[index]
    env = {**os.environ, "API": live_server.url, "TOKEN": token}

    output = run([sys.executable, "-c", code], cwd=workdir, env=env, timeout=180)

    assert len(examples("python")) == 2
    if index == 0:
        assert "notes.txt" in output and "Only JPG" in output  # the refused file, with its reason
        assert re.search(r"^female \(\d+%\), \d+ \(\d+-\d+\) at \[", output, re.MULTILINE), output
    else:
        assert output.startswith("Woman ") and "'x':" in output, output


def test_schemathesis_finds_nothing_wrong_with_the_api(live_server, celery_worker, token, settings, tmp_path):
    """Property-based: requests made from the schema (valid and not), each answer checked against it.
    Bounded: a few examples per operation, a fixed seed (reproducible), /analyze waits at most 5 s.
    Not checked: that every schema-valid request is accepted (`positive_data_acceptance`), since no
    schema can say which bytes are a photo."""
    settings.AGEGENDER_ANALYZE_WAIT_SECONDS = 5
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{live_server.url}/api/schema/",
        "--header", f"Authorization: Token {token}",
        "--max-examples", "8", "--seed", "20261204", "--workers", "1",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--generation-database", "none", "--request-timeout", "40", "--no-color",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    summary = result.stdout[result.stdout.rfind("SUMMARY") - 40 :]
    print(summary)  # what schemathesis tried (pytest -s shows it)
    assert result.returncode == 0, result.stdout[-20000:]
    assert "Tested: 5" in summary
