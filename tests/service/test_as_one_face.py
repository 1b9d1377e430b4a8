"""A photo in which no face was found can be read again, on its sender's word, as one face."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from predictions import services
from predictions.models import Face, Prediction
from predictions.uploads import check_image_upload
from tests.conftest import wait_until_finished


def upload(client, name: str, content: bytes) -> Prediction:
    response = client.post("/", {"images": [SimpleUploadedFile(name, content, content_type="image/jpeg")]})
    assert response.status_code == 302, response.content.decode()
    return Prediction.objects.get(original_name=name)


def offered(page: str) -> bool:
    """Whether the page shows the "read the whole photo as one face" form (present and not hidden)."""
    form = re.search(r'<form[^>]*class="as-one-face"[^>]*>', page)
    return form is not None and " hidden" not in form.group(0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_photo_without_faces_is_read_as_one_face_when_its_sender_says_so(
    client, celery_worker, no_face_jpeg
):
    prediction = upload(client, "tight-crop.jpg", no_face_jpeg)
    first = wait_until_finished(client, prediction.id)
    assert (first["status"], first["faces"], first["as_one_face"]) == ("done", [], False)
    assert offered(client.get(f"/p/{prediction.id}/").content.decode())

    response = client.post(f"/p/{prediction.id}/as-one-face/")

    assert response.status_code == 302 and response["Location"] == f"/p/{prediction.id}/"
    again = wait_until_finished(client, prediction.id)
    assert again["status"] == "done" and again["as_one_face"] is True
    assert again["seen_statuses"][0] in ("queued", "processing")  # it really ran again
    [face] = again["faces"]
    assert face["detected"] is False
    assert face["box"] == [0, 0, 480, 360]  # no face even at low thresholds: the whole photo
    assert face["age_low"] <= face["age"] <= face["age_high"] and face["gender"] in ("male", "female")
    page = client.get(f"/p/{prediction.id}/").content.decode()
    assert not offered(page)
    assert "no face was detected: the whole photo was read as one" in page
    # Once is enough: asking again (the button pressed twice) changes nothing and says why.
    refused = client.post(f"/p/{prediction.id}/as-one-face/", follow=True)
    assert "Only a photo in which no face was found" in refused.content.decode()
    assert wait_until_finished(client, prediction.id)["seen_statuses"] == ["done"]


@pytest.fixture
def done_with_a_face(astronaut_jpeg) -> Prediction:
    upload_file = SimpleUploadedFile("me.jpg", astronaut_jpeg, content_type="image/jpeg")
    prediction = services.prediction_create(
        upload=upload_file, checked=check_image_upload(upload_file), owner=None, session_key="visitor-a"
    )
    Face.objects.create(
        prediction=prediction, index=0, x1=1, y1=2, x2=30, y2=40, detection_confidence=0.99,
        age=31.5, age_low=25, age_high=38, gender="female", gender_confidence=0.93,
    )  # fmt: skip
    Prediction.objects.filter(pk=prediction.pk).update(status=Prediction.Status.DONE)
    return prediction


def visitor(key: str) -> Client:
    from predictions.signals import VISITOR_KEY

    client = Client()
    session = client.session
    session[VISITOR_KEY] = key
    session.save()
    return client


@pytest.mark.django_db
def test_a_photo_with_faces_is_not_read_as_one_face(done_with_a_face, django_capture_on_commit_callbacks):
    owner = visitor("visitor-a")
    assert not offered(owner.get(f"/p/{done_with_a_face.id}/").content.decode())

    with django_capture_on_commit_callbacks() as callbacks:
        response = owner.post(f"/p/{done_with_a_face.id}/as-one-face/", follow=True)

    assert response.redirect_chain == [(f"/p/{done_with_a_face.id}/", 302)]
    assert "Only a photo in which no face was found can be read as one face." in response.content.decode()
    assert callbacks == []
    done_with_a_face.refresh_from_db()
    assert done_with_a_face.status == "done" and not done_with_a_face.as_one_face


@pytest.mark.django_db
def test_only_its_owner_may_ask_and_only_by_post(done_with_a_face):
    Face.objects.all().delete()  # a photo without faces, so the owner may ask
    url = f"/p/{done_with_a_face.id}/as-one-face/"

    assert visitor("visitor-b").post(url).status_code == 404
    assert visitor("visitor-a").get(url).status_code == 405
    page = visitor("visitor-b").get(f"/p/{done_with_a_face.id}/")
    assert page.status_code == 404
    done_with_a_face.refresh_from_db()
    assert done_with_a_face.status == "done" and not done_with_a_face.as_one_face
    assert offered(visitor("visitor-a").get(f"/p/{done_with_a_face.id}/").content.decode())


@pytest.mark.django_db
def test_asked_from_an_uploads_page_it_goes_back_there_and_never_elsewhere(
    done_with_a_face, django_capture_on_commit_callbacks
):
    Face.objects.all().delete()  # a photo without faces, so the owner may ask
    owner = visitor("visitor-a")
    results = f"/results/?ids={done_with_a_face.id}"
    assert offered(owner.get(results).content.decode())  # offered on the upload's page too

    with django_capture_on_commit_callbacks():
        response = owner.post(f"/p/{done_with_a_face.id}/as-one-face/", {"next": results})
    assert response.status_code == 302 and response["Location"] == results

    Prediction.objects.filter(pk=done_with_a_face.pk).update(status="done", as_one_face=False)
    with django_capture_on_commit_callbacks():
        response = owner.post(f"/p/{done_with_a_face.id}/as-one-face/", {"next": "https://evil.example/"})
    assert response["Location"] == f"/p/{done_with_a_face.id}/"  # not to another site
