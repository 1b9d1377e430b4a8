"""Nobody sees, polls, downloads or deletes someone else's prediction: all get 404."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from predictions import services
from predictions.models import Prediction
from predictions.uploads import check_image_upload
from tests.conftest import stored_files

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    "/p/{id}/",
    "/p/{id}/status/",
    "/p/{id}/image/",
    "/p/{id}/original/",
    "/p/{id}/thumbnail/",
    "/p/{id}/delete/",
]


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(username=username, password="a-long-password-123", **extra)


def make_prediction(jpeg: bytes, *, owner=None, session_key: str = "") -> Prediction:
    upload = SimpleUploadedFile("mine.jpg", jpeg, content_type="image/jpeg")
    return services.prediction_create(
        upload=upload, checked=check_image_upload(upload), owner=owner, session_key=session_key
    )


@pytest.fixture
def alice_prediction(astronaut_jpeg) -> Prediction:
    return make_prediction(astronaut_jpeg, owner=make_user("alice"))


@pytest.fixture
def alice(alice_prediction) -> Client:
    client = Client()
    client.force_login(alice_prediction.owner)
    return client


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_owner_can_open_every_endpoint(alice, alice_prediction, endpoint):
    response = alice.get(endpoint.format(id=alice_prediction.id))
    assert response.status_code == 200


def test_owner_downloads_the_exact_stored_image(alice, alice_prediction, astronaut_jpeg):
    response = alice.get(f"/p/{alice_prediction.id}/image/")
    assert b"".join(response.streaming_content) == astronaut_jpeg
    assert response["Content-Type"] == "image/jpeg"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("method", ["get", "post"])
def test_another_user_gets_404(alice_prediction, endpoint, method):
    bob = Client()
    bob.force_login(make_user("bob"))
    response = getattr(bob, method)(endpoint.format(id=alice_prediction.id))
    assert response.status_code in (404, 405)
    if response.status_code == 405:  # read-only endpoints refuse POST outright; GET must be 404
        assert bob.get(endpoint.format(id=alice_prediction.id)).status_code == 404
    assert Prediction.objects.filter(pk=alice_prediction.pk).exists()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_anonymous_visitor_gets_404(client, alice_prediction, endpoint):
    assert client.get(endpoint.format(id=alice_prediction.id)).status_code == 404
    if endpoint.endswith("delete/"):
        assert client.post(endpoint.format(id=alice_prediction.id)).status_code == 404
    assert Prediction.objects.filter(pk=alice_prediction.pk).exists()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_guessed_id_gets_404(alice, alice_prediction, endpoint):
    assert alice.get(endpoint.format(id=uuid.uuid4())).status_code == 404


def test_the_results_page_of_an_upload_shows_only_the_viewers_own_photos(
    alice, alice_prediction, astronaut_jpeg
):
    bob_user = make_user("bob")
    bob_prediction = make_prediction(astronaut_jpeg, owner=bob_user)
    bob = Client()
    bob.force_login(bob_user)
    both = f"/results/?ids={alice_prediction.id},{bob_prediction.id}"  # the ids asked are echoed in forms

    alice_page = alice.get(both).content.decode()
    assert f"/p/{alice_prediction.id}/" in alice_page and f"/p/{bob_prediction.id}/" not in alice_page
    bob_page = bob.get(both).content.decode()
    assert f"/p/{bob_prediction.id}/" in bob_page and f"/p/{alice_prediction.id}/" not in bob_page
    assert Client().get(both).status_code == 404  # a stranger sees nothing, not an empty page
    assert bob.get(f"/results/?ids={alice_prediction.id}").status_code == 404


@pytest.mark.parametrize("query", ["", "?ids=", "?ids=not-a-uuid", "?ids={id},nope", "?ids={random}"])
def test_results_page_with_no_readable_ids_is_404(alice, alice_prediction, query):
    url = "/results/" + query.format(id=alice_prediction.id, random=uuid.uuid4())
    assert alice.get(url).status_code == 404


def test_staff_may_look_at_a_results_page_but_are_not_offered_changes(alice_prediction):
    staff = Client()
    staff.force_login(make_user("admin", is_staff=True))
    response = staff.get(f"/results/?ids={alice_prediction.id}")
    assert response.status_code == 200
    assert "as-one-face" not in response.content.decode()


def test_anonymous_session_owns_its_predictions_and_other_sessions_do_not(astronaut_jpeg):
    visitor, stranger = Client(), Client()
    visitor.post("/", {"images": [SimpleUploadedFile("me.jpg", astronaut_jpeg, content_type="image/jpeg")]})
    prediction = Prediction.objects.get()

    assert prediction.owner is None and prediction.session_key
    assert visitor.get(f"/p/{prediction.id}/status/").status_code == 200
    assert stranger.get(f"/p/{prediction.id}/status/").status_code == 404
    assert stranger.get("/history/").content.decode().count(str(prediction.id)) == 0
    assert str(prediction.id) in visitor.get("/history/").content.decode()


def test_staff_may_look_but_not_delete(alice_prediction):
    staff = Client()
    staff.force_login(make_user("admin", is_staff=True))
    assert staff.get(f"/p/{alice_prediction.id}/thumbnail/").status_code == 200
    assert staff.post(f"/p/{alice_prediction.id}/delete/").status_code == 404


def test_owner_delete_removes_row_and_stored_file(
    alice, alice_prediction, private_media, django_capture_on_commit_callbacks
):
    assert len(stored_files(private_media)) == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = alice.post(f"/p/{alice_prediction.id}/delete/")

    assert response.status_code == 302 and response["Location"] == "/history/"
    assert not Prediction.objects.filter(pk=alice_prediction.pk).exists()
    assert stored_files(private_media) == []


def test_logging_in_claims_the_anonymous_predictions_of_the_session(astronaut_jpeg):
    visitor = Client()
    visitor.post("/", {"images": [SimpleUploadedFile("me.jpg", astronaut_jpeg, content_type="image/jpeg")]})
    make_user("carol")

    response = visitor.post("/accounts/login/", {"username": "carol", "password": "a-long-password-123"})

    assert response.status_code == 302
    prediction = Prediction.objects.get()
    assert prediction.owner.username == "carol" and prediction.session_key == ""
    assert visitor.get(f"/p/{prediction.id}/").status_code == 200


def test_signing_up_claims_them_too_and_logout_forgets_them(astronaut_jpeg):
    visitor = Client()
    visitor.post("/", {"images": [SimpleUploadedFile("me.jpg", astronaut_jpeg, content_type="image/jpeg")]})
    password = "a-long-password-123"
    response = visitor.post(
        "/accounts/signup/", {"username": "dave", "password1": password, "password2": password}
    )
    assert response.status_code == 302
    prediction = Prediction.objects.get()
    assert prediction.owner.username == "dave"

    visitor.post("/accounts/logout/")
    assert visitor.get(f"/p/{prediction.id}/").status_code == 404


def test_history_is_newest_first_and_paginated(alice, alice_prediction, astronaut_jpeg):
    for _ in range(13):
        make_prediction(astronaut_jpeg, owner=alice_prediction.owner)
    newest = Prediction.objects.order_by("-created_at").first()

    first_page = alice.get("/history/").content.decode()
    second_page = alice.get("/history/?page=2").content.decode()

    assert first_page.count('class="history-item"') == 12
    assert second_page.count('class="history-item"') == 2
    assert first_page.index(str(newest.id)) < first_page.index('class="pager"')
    assert str(alice_prediction.id) in second_page  # the oldest is last
    assert "Page 2 of 2" in second_page


def test_history_names_each_photos_first_faces(alice, alice_prediction, predictor, face_grid_jpeg):
    """Eight faces read by the real model: the history says how many and names the first three, in the
    order the photo's page numbers them, as the result page rounds their ages."""
    faces = predictor.predict(face_grid_jpeg)
    services.prediction_finish(
        prediction_id=alice_prediction.id,
        faces=faces,
        model_version="test",
        image_width=520,
        image_height=320,
        inference_ms=1,
    )
    first = Prediction.objects.get(pk=alice_prediction.pk).faces.all()[:3]
    brief = ", ".join(f"{face.gender} {int(face.age + 0.5)}" for face in first) + ", +5 more"

    page = alice.get("/history/").content.decode()

    assert len(faces) == 8 and "8 faces · " in page
    assert f'<div class="faces-brief">{brief}</div>' in page
    detail = alice.get(f"/p/{alice_prediction.id}/").content.decode()
    for number, face in enumerate(first, start=1):  # the same faces, numbered the same, on its page
        assert f"{number} · {face.gender} {int(face.age + 0.5)}</span>" in detail
