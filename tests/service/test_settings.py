"""Settings come from the environment; the web process never loads TensorFlow or the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> str:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("AGEGENDER_", "DATABASE_URL", "REDIS_URL"))
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "agegender_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


SHOW = (
    "import json; from django.conf import settings as s; "
    "print(json.dumps([s.DATABASES['default']['ENGINE'], s.STORAGES['default']['BACKEND'], "
    "s.CELERY_BROKER_URL, s.AGEGENDER_MAX_UPLOAD_BYTES, s.STORAGES['default'].get('OPTIONS', {})]))"
)


def test_defaults_are_sqlite_private_local_files_and_local_redis():
    engine, storage, broker, limit, options = json.loads(run_python(SHOW))
    assert engine == "django.db.backends.sqlite3"
    assert storage == "django.core.files.storage.FileSystemStorage"
    assert options["base_url"] is None  # no public media URL
    assert broker == "redis://127.0.0.1:6379/0"
    assert limit == 15 * 1024 * 1024


def test_environment_switches_to_postgres_s3_and_another_redis():
    engine, storage, broker, limit, options = json.loads(
        run_python(
            SHOW,
            DATABASE_URL="postgres://u:p@db:5432/agegender",
            AGEGENDER_S3_BUCKET="photos",
            AGEGENDER_S3_ENDPOINT_URL="http://minio:9000",
            REDIS_URL="redis://redis:6379/1",
            AGEGENDER_MAX_UPLOAD_MB="4",
        )
    )
    assert engine == "django.db.backends.postgresql"
    assert storage == "agegender_site.storage.PrivateS3Storage"
    assert options["bucket_name"] == "photos" and options["endpoint_url"] == "http://minio:9000"
    assert options["querystring_auth"] is True and options["default_acl"] == "private"
    assert broker == "redis://redis:6379/1"
    assert limit == 4 * 1024 * 1024


def test_a_bad_value_fails_loudly():
    result = subprocess.run(
        [sys.executable, "-c", "import agegender_site.settings"],
        cwd=ROOT,
        env={**os.environ, "AGEGENDER_MAX_UPLOAD_MB": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "AGEGENDER_MAX_UPLOAD_MB='lots' is not an integer" in result.stderr


def test_serving_pages_never_imports_tensorflow_or_the_engine():
    code = (
        "import django, sys; django.setup(); "
        "from django.test.utils import setup_test_environment; setup_test_environment(); "
        "from django.test import Client; "
        "assert Client().get('/').status_code == 200; "
        "import agegender_site.urls, predictions.admin, predictions.views; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'ml', 'worker')))"
    )
    assert run_python(code) == "[]"


QUEUE = (
    "import json; from agegender_site.celery import app; from django.conf import settings as s; "
    "print(json.dumps([s.AGEGENDER_QUEUE, app.conf.task_default_queue, sorted(app.amqp.queues)]))"
)


def test_each_database_gets_its_own_queue_unless_one_is_named(tmp_path):
    # Two checkouts on one Redis: each worker takes only jobs whose rows live in its own database.
    first, default, consumed = json.loads(run_python(QUEUE, AGEGENDER_VAR_DIR=str(tmp_path / "a")))
    second = json.loads(run_python(QUEUE, AGEGENDER_VAR_DIR=str(tmp_path / "b")))[0]
    again = json.loads(run_python(QUEUE, AGEGENDER_VAR_DIR=str(tmp_path / "a")))[0]
    assert first.startswith("predictions-") and first != second and first == again
    assert default == first and consumed == [first]  # a worker started plainly consumes it
    postgres = json.loads(run_python(QUEUE, DATABASE_URL="postgres://u:p@db:5432/agegender"))[0]
    other_db = json.loads(run_python(QUEUE, DATABASE_URL="postgres://u:p@db:5432/other"))[0]
    assert postgres != other_db and first not in (postgres, other_db)
    named = json.loads(run_python(QUEUE, AGEGENDER_QUEUE="jobs", DATABASE_URL="postgres://u:p@db:5432/x"))
    assert named == ["jobs", "jobs", ["jobs"]]


CSP = "from agegender_site.security import content_security_policy as c; print(c())"


def test_pages_may_run_only_this_sites_scripts_and_show_photos_from_where_they_are_stored():
    policy = dict(part.split(" ", 1) for part in run_python(CSP).split("; "))
    assert policy["script-src"] == "'self'" and policy["object-src"] == "'none'"
    assert policy["img-src"] == "'self' data: blob:"  # local storage: photos come from this site
    assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'self'"

    minio = run_python(
        CSP, AGEGENDER_S3_BUCKET="photos", AGEGENDER_S3_ENDPOINT_URL="http://minio:9000",
        AGEGENDER_S3_PUBLIC_ENDPOINT_URL="https://files.example.com/store",
    )  # fmt: skip
    assert "img-src 'self' data: blob: https://files.example.com;" in minio  # where signed URLs lead
    aws = run_python(CSP, AGEGENDER_S3_BUCKET="photos")
    assert "img-src 'self' data: blob: https://*.amazonaws.com;" in aws


@pytest.mark.django_db
def test_every_response_carries_the_policy(client):
    for url in ("/", "/history/", "/p/00000000-0000-0000-0000-000000000000/"):
        response = client.get(url)
        assert "script-src 'self'" in response["Content-Security-Policy"], url
        assert response["Permissions-Policy"] == "camera=(self), microphone=(), geolocation=()"
        assert response["X-Frame-Options"] == "DENY"
