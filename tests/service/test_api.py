"""The REST API through the test client: tokens, ownership, uploads with their refusals, waiting for a
result from the real worker, listing, deleting with the files, the allowance per token, the schema."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client

from predictions.api.models import ApiToken
from predictions.api.tokens import token_create
from predictions.models import Prediction
from tests.conftest import stored_files

pytestmark = pytest.mark.django_db

API = "/api/v1/predictions/"
FACE_FIELDS = ["box", "detected", "detection_confidence", "age", "age_low", "age_high", "gender",
               "gender_confidence", "left_eye", "right_eye"]  # fmt: skip


def user_with_token(name: str) -> tuple[object, str]:
    user = get_user_model().objects.create_user(name, password="a-long-password-1")
    return user, token_create(user=user, name="tests")[1]


def auth(key: str, keyword: str = "Token") -> dict:
    return {"Authorization": f"{keyword} {key}"}


def photo(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="image/jpeg")


def send(client: Client, key: str, *files: SimpleUploadedFile):
    return client.post(API, {"image": list(files)}, headers=auth(key))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", API),
        ("post", API),
        ("get", f"{API}00000000-0000-0000-0000-000000000000/"),
        ("post", "/analyze"),
    ],
)
def test_requests_without_credentials_get_401(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_wrong_or_revoked_token_gets_401_and_both_keywords_work(client):
    user, key = user_with_token("ada")
    assert client.get(API, headers=auth(key)).status_code == 200
    assert client.get(API, headers=auth(key, "Bearer")).status_code == 200
    assert client.get(API, headers=auth(key + "x")).status_code == 401
    ApiToken.objects.filter(user=user).delete()
    assert client.get(API, headers=auth(key)).status_code == 401
    assert ApiToken._meta.get_field("digest") and key not in str(list(ApiToken.objects.values()))


def test_create_api_token_prints_the_key_last(capsys):
    get_user_model().objects.create_user("scripter", password="a-long-password-1")
    call_command("create_api_token", "scripter", "--name", "cron")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    token = ApiToken.objects.get(user__username="scripter")
    assert token.name == "cron" and key.startswith(token.prefix) and token.digest not in key
    assert Client().get(API, headers=auth(key)).status_code == 200


def test_upload_queues_each_good_photo_and_names_each_refused_one(
    client, jobs_go_nowhere, astronaut_jpeg, private_media
):
    _, key = user_with_token("ada")
    response = send(
        client, key, photo("a.jpg", astronaut_jpeg), photo("notes.txt", b"hello"), photo("empty.jpg", b"")
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert [p["status"] for p in body["predictions"]] == ["queued"]
    prediction = Prediction.objects.get()
    assert body["predictions"][0]["id"] == str(prediction.id)
    assert body["predictions"][0]["url"] == f"http://testserver{API}{prediction.id}/"
    assert {r["name"]: r["error"] for r in body["refused"]} == {
        "notes.txt": "Only JPG, JPEG, JFIF, PNG, WEBP, HEIC, HEIF, AVIF photos are accepted.",
        "empty.jpg": "The file is empty.",
    }
    assert prediction.owner.username == "ada" and len(stored_files(private_media)) == 1


def test_a_batch_with_nothing_good_or_too_many_photos_is_refused_whole(client, settings, astronaut_jpeg):
    _, key = user_with_token("ada")
    nothing = send(client, key, photo("x.jpg", b"not a photo"))
    assert nothing.status_code == 400
    assert nothing.json()["refused"] == [
        {"name": "x.jpg", "error": "This file is not an image (or not one we can read)."}
    ]
    assert client.post(API, {}, headers=auth(key)).json()["errors"] == ["Choose at least one photo."]
    settings.AGEGENDER_MAX_FILES_PER_UPLOAD = 2
    too_many = send(client, key, *[photo(f"{i}.jpg", astronaut_jpeg) for i in range(3)])
    assert too_many.status_code == 400 and too_many.json()["errors"][0].startswith("At most 2 photos")
    assert not Prediction.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_wait_answers_once_the_real_worker_is_done(client, celery_worker, astronaut_jpeg):
    _, key = user_with_token("ada")
    created = send(client, key, photo("astronaut.jpg", astronaut_jpeg)).json()["predictions"][0]

    response = client.get(created["url"] + "?wait=30", headers=auth(key))

    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    data = response.json()
    assert data["status"] == "done" and data["finished"] is True, data
    assert data["face_count"] == 1 and list(data["faces"][0]) == FACE_FIELDS
    face = data["faces"][0]
    assert face["gender"] == "female" and face["age_low"] <= face["age"] <= face["age_high"]
    status_page = client.get(f"/p/{created['id']}/status/")  # not the API's caller's session: 404
    assert status_page.status_code == 404


def test_wait_is_bounded_and_answers_at_once_when_asked_not_to(client, jobs_go_nowhere, astronaut_jpeg):
    _, key = user_with_token("ada")
    url = send(client, key, photo("a.jpg", astronaut_jpeg)).json()["predictions"][0]["url"]
    assert client.get(url + "?wait=31", headers=auth(key)).status_code == 400
    assert client.get(url + "?wait=soon", headers=auth(key)).status_code == 400
    waited = client.get(url + "?wait=0.3", headers=auth(key)).json()
    assert waited["status"] == "queued" and waited["waiting_ahead"] is not None


def test_another_users_prediction_is_404_and_lists_hold_only_ones_own(
    client, jobs_go_nowhere, astronaut_jpeg
):
    _, ada = user_with_token("ada")
    _, bob = user_with_token("bob")
    ids = [
        send(client, ada, photo(f"{i}.jpg", astronaut_jpeg)).json()["predictions"][0]["id"] for i in range(3)
    ]
    send(client, bob, photo("bob.jpg", astronaut_jpeg))
    Prediction.objects.filter(pk=ids[0]).update(status="failed", error="x")

    assert client.get(f"{API}{ids[0]}/", headers=auth(bob)).status_code == 404
    assert client.delete(f"{API}{ids[0]}/", headers=auth(bob)).status_code == 404
    listed = client.get(API, headers=auth(ada)).json()
    assert listed["count"] == 3 and [p["id"] for p in listed["results"]] == ids[::-1]  # newest first
    page = client.get(API + "?page_size=2&page=2", headers=auth(ada)).json()
    assert [p["id"] for p in page["results"]] == [ids[0]] and page["previous"]
    failed = client.get(API + "?status=failed", headers=auth(ada)).json()
    assert [p["id"] for p in failed["results"]] == [ids[0]]
    assert client.get(API + "?status=lost", headers=auth(ada)).status_code == 400


def test_delete_removes_the_prediction_and_its_files(
    client, jobs_go_nowhere, astronaut_jpeg, private_media, django_capture_on_commit_callbacks
):
    _, key = user_with_token("ada")
    url = send(client, key, photo("a.jpg", astronaut_jpeg)).json()["predictions"][0]["url"]
    assert len(stored_files(private_media)) == 1

    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(url, headers=auth(key)).status_code == 204

    assert not Prediction.objects.exists() and stored_files(private_media) == []
    assert client.get(url, headers=auth(key)).status_code == 404


def test_each_token_has_its_own_hourly_allowance_answered_429_with_retry_after(
    client, upload_allowance, jobs_go_nowhere, astronaut_jpeg
):
    upload_allowance(2)
    user, first = user_with_token("ada")
    second = token_create(user=user, name="other")[1]
    assert (
        send(client, first, photo("1.jpg", astronaut_jpeg), photo("2.jpg", astronaut_jpeg)).status_code == 202
    )

    refused = send(client, first, photo("3.jpg", astronaut_jpeg))

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert refused.json()["detail"].startswith("Too many photos with this token: at most 2 an hour")
    assert Prediction.objects.count() == 2
    assert send(client, second, photo("3.jpg", astronaut_jpeg)).status_code == 202


def test_session_authentication_works_and_checks_csrf(jobs_go_nowhere, astronaut_jpeg):
    user = get_user_model().objects.create_user("ada", password="a-long-password-1")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get(API).status_code == 200
    refused = browser.post(API, {"image": [photo("a.jpg", astronaut_jpeg)]})
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    browser.get("/")  # sets the CSRF cookie, as the page would
    token = browser.cookies["csrftoken"].value
    sent = browser.post(API, {"image": [photo("a.jpg", astronaut_jpeg)]}, headers={"X-CSRFToken": token})
    assert sent.status_code == 202


def test_the_account_page_creates_shows_once_and_revokes_tokens(client):
    user = get_user_model().objects.create_user("ada", password="a-long-password-1")
    assert client.get("/accounts/tokens/").status_code == 302  # to the login page
    client.force_login(user)
    assert 'href="/accounts/tokens/"' in client.get("/").content.decode()  # in the nav

    created = client.post("/accounts/tokens/", {"name": "laptop"})

    assert created.status_code == 201
    page = created.content.decode()
    token = ApiToken.objects.get(name="laptop")
    key = page.split('id="new-token-key">')[1].split("<")[0]
    assert key.startswith(token.prefix) and "laptop" in page
    assert client.get(API, headers=auth(key)).status_code == 200
    assert key not in client.get("/accounts/tokens/").content.decode()  # shown once
    client.post(f"/accounts/tokens/{token.id}/revoke/")
    assert Client().get(API, headers=auth(key)).status_code == 401


def test_the_schema_and_its_browsable_page_are_served_without_a_cdn(client):
    schema = client.get("/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert {"/api/v1/predictions/", "/api/v1/predictions/{id}/", "/analyze"} <= set(document["paths"])
    assert "tokenAuth" in document["components"]["securitySchemes"]
    docs = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in docs
    assert "<script>" not in docs.replace(" ", "")  # no inline script: the CSP allows none
    assert client.get("/api/docs/?script=").status_code == 200


def test_status_endpoint_and_export_use_the_api_serializer(client, jobs_go_nowhere, astronaut_jpeg):
    from predictions.serializers import PredictionSerializer

    session = client.session
    session["predictions_visitor"] = "v"
    session.save()
    client.post("/", {"images": [photo("a.jpg", astronaut_jpeg)]})
    prediction = Prediction.objects.get()
    status = client.get(f"/p/{prediction.id}/status/").json()
    exported = client.get("/history/export.json").json()["predictions"][0]
    assert set(status) == set(PredictionSerializer.Meta.fields)
    assert set(exported) == set(PredictionSerializer.Meta.fields) - {"waiting_ahead"}


def test_staff_see_and_revoke_tokens_in_the_admin_but_cannot_make_keys(admin_client):
    user, key = user_with_token("ada")
    token = ApiToken.objects.get(user=user)
    page = admin_client.get("/admin/api/apitoken/").content.decode()
    assert token.prefix in page and key not in page
    assert admin_client.get("/admin/api/apitoken/add/").status_code == 403
    admin_client.post(f"/admin/api/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert Client().get(API, headers=auth(key)).status_code == 401
