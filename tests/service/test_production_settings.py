"""Production-safe defaults: with DJANGO_DEBUG=0 Django's own deployment check finds nothing, HTTPS is
on unless turned off, logins are throttled, and a file name too long is said plainly."""

from __future__ import annotations

import secrets

import pytest

from predictions.models import Prediction
from tests.service.test_settings import ROOT, run_python

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "photos.example.com",
}


def test_the_deployment_check_is_clean_in_production():
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGEGENDER_", "DJANGO_"))}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**clean, **PRODUCTION},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


SHOW_HTTPS = (
    "from django.conf import settings as s; "
    "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, "
    "getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
)


def test_https_is_on_by_default_in_production_and_each_part_can_be_turned_off():
    assert run_python(SHOW_HTTPS, **PRODUCTION) == "True 31536000 True None"
    assert run_python(SHOW_HTTPS) == "False 0 False None"  # DJANGO_DEBUG defaults to on: local runs
    plain_http = {
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
        "DJANGO_SECURE_COOKIES": "0",
    }
    assert run_python(SHOW_HTTPS, **PRODUCTION, **plain_http) == "False 0 False None"
    behind_proxy = {"DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}
    assert run_python(SHOW_HTTPS, **PRODUCTION, **behind_proxy).endswith(
        "('HTTP_X_FORWARDED_PROTO', 'https')"
    )


def test_the_redirect_sends_plain_http_to_https_except_the_health_check(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/")
    assert response.status_code == 301 and response["Location"] == "https://testserver/"
    assert client.get("/healthz").status_code in (200, 503)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client.get("/", headers={"X-Forwarded-Proto": "https"}).status_code == 200


@pytest.mark.django_db
def test_logins_are_throttled_after_five_wrong_passwords(client, django_user_model):
    django_user_model.objects.create_user("ada", password="a long right password")
    for _ in range(4):
        wrong = client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
        assert wrong.status_code == 200 and "correct username and password" in wrong.content.decode()

    locked = client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
    assert locked.status_code == 429 and "After 5 wrong passwords in a row" in locked.content.decode()
    right = client.post("/accounts/login/", {"username": "ada", "password": "a long right password"})
    assert right.status_code == 429  # even the right one, for the hour
    other = client.post(
        "/accounts/login/", {"username": "ada", "password": "a long right password"}, REMOTE_ADDR="10.1.1.1"
    )
    assert other.status_code == 302  # from another address the account is not locked


@pytest.mark.django_db
def test_a_thousand_character_file_name_is_refused_with_a_message_that_says_so(client, astronaut_jpeg):
    import io

    photo = io.BytesIO(astronaut_jpeg)
    photo.name = "a" * 996 + ".jpg"
    response = client.post("/", {"images": [photo]})

    assert response.status_code == 400
    assert "A file name is far too long: names may be at most 255 characters." in response.content.decode()
    assert Prediction.objects.count() == 0
    photo.seek(0)
    scripted = client.post("/", {"images": [photo]}, headers={"Accept": "application/json"})
    assert scripted.status_code == 400 and scripted.json()["errors"][0].startswith(
        "A file name is far too long"
    )


@pytest.mark.django_db
def test_a_file_name_over_255_characters_is_refused_with_its_length(
    client, settings, private_media, astronaut_jpeg
):
    import io

    small, large = io.BytesIO(astronaut_jpeg), io.BytesIO(astronaut_jpeg)
    small.name = "a" * 396 + ".jpg"
    large.name = "b" * 395 + ".jpeg"
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000  # the second as a large upload is, in a temporary file
    response = client.post("/", {"images": [small, large]})

    assert response.status_code == 400
    page = response.content.decode()
    assert page.count("The file name is 400 characters long; the limit is 255. Rename the file") == 2
    assert Prediction.objects.count() == 0 and list(private_media.rglob("*.*")) == []


def test_the_compose_file_requires_a_secret_key_and_turns_https_off_for_plain_http_explicitly():
    import yaml

    environment = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-app"]["environment"]
    assert environment["DJANGO_SECRET_KEY"].startswith(
        "${DJANGO_SECRET_KEY:?"
    )  # no default: refuses to start
    assert environment["DJANGO_DEBUG"] == "0"
    for name in ("DJANGO_SECURE_SSL_REDIRECT", "DJANGO_SECURE_HSTS_SECONDS", "DJANGO_SECURE_COOKIES"):
        assert environment[name] == f"${{{name}:-0}}"


@pytest.mark.parametrize("debug", ["1", "0"])
def test_a_web_warning_is_logged_once(debug):
    import os
    import subprocess
    import sys

    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('django.request').warning('Not Found: /probe-%s', 'once')"
    )
    env = {**os.environ, **PRODUCTION, "DJANGO_DEBUG": debug}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).count("Not Found: /probe-once") == 1


def test_favicon_ico_leads_to_the_sites_icon(client):
    from django.contrib.staticfiles import finders

    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/agegender/favicon.svg"
    assert finders.find("agegender/favicon.svg")
