"""People can take all their photos back at once: "Delete all" on the history page, and deleting the
account itself. Only their own go, files included."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from predictions import services
from predictions.models import Prediction
from predictions.uploads import check_image_upload
from tests.conftest import stored_files

pytestmark = [
    pytest.mark.django_db(transaction=True),  # files go once the delete has committed
    pytest.mark.usefixtures("jobs_go_nowhere"),  # no worker reads these photos meanwhile
]

PASSWORD = "a-long-password-123"


def make(jpeg: bytes, *, owner=None, session_key: str = "") -> Prediction:
    upload = SimpleUploadedFile("me.jpg", jpeg, content_type="image/jpeg")
    return services.prediction_create(
        upload=upload, checked=check_image_upload(upload), owner=owner, session_key=session_key
    )


def signed_in(username: str) -> tuple[Client, object]:
    user = get_user_model().objects.create_user(username, password=PASSWORD)
    client = Client()
    client.force_login(user)
    return client, user


def test_delete_all_takes_only_the_viewers_photos(private_media, astronaut_jpeg):
    gina_client, gina = signed_in("gina")
    _, hal = signed_in("hal")
    mine = [make(astronaut_jpeg, owner=gina) for _ in range(3)]
    theirs = make(astronaut_jpeg, owner=hal)

    page = gina_client.get("/history/delete-all/").content.decode()
    assert "All 3 photos and their results are removed for good" in page
    assert Prediction.objects.count() == 4  # asking is not deleting

    response = gina_client.post("/history/delete-all/", follow=True)

    assert "Deleted 3 photos and their results." in response.content.decode()
    assert list(Prediction.objects.all()) == [theirs]
    assert [path.name for path in stored_files(private_media)] == [theirs.image.name.rsplit("/", 1)[-1]]
    assert all(not Prediction.objects.filter(pk=p.pk).exists() for p in mine)


def test_a_visitor_deletes_this_sessions_photos_only(private_media, astronaut_jpeg):
    visitor = Client()
    visitor.post("/", {"images": [SimpleUploadedFile("me.jpg", astronaut_jpeg, content_type="image/jpeg")]})
    other = make(astronaut_jpeg, session_key="someone-else")
    assert Prediction.objects.count() == 2

    visitor.post("/history/delete-all/")

    assert list(Prediction.objects.all()) == [other]
    assert Client().post("/history/delete-all/").status_code == 302  # nothing of a newcomer's: no harm
    assert list(Prediction.objects.all()) == [other]


def test_deleting_the_account_asks_for_the_password_then_removes_it_all(private_media, astronaut_jpeg):
    client, user = signed_in("ivy")
    make(astronaut_jpeg, owner=user)
    assert "Delete my account" in client.get("/history/").content.decode()

    wrong = client.post("/accounts/delete/", {"password": "guess"})
    assert wrong.status_code == 200 and "That is not your password." in wrong.content.decode()
    assert get_user_model().objects.filter(pk=user.pk).exists() and Prediction.objects.count() == 1

    response = client.post("/accounts/delete/", {"password": PASSWORD}, follow=True)

    assert "Deleted the account ivy and its 1 photo." in response.content.decode()
    assert not get_user_model().objects.filter(pk=user.pk).exists()
    assert Prediction.objects.count() == 0 and stored_files(private_media) == []
    assert not response.wsgi_request.user.is_authenticated  # signed out


def test_a_visitor_is_asked_to_log_in_before_deleting_an_account():
    response = Client().get("/accounts/delete/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_people_can_download_all_their_results(astronaut_jpeg):
    from predictions.models import Face

    client, user = signed_in("jo")
    _, other = signed_in("kim")
    mine = make(astronaut_jpeg, owner=user)
    make(astronaut_jpeg, owner=other)
    Prediction.objects.filter(pk=mine.pk).update(status="done", model_version="agegender-fused 9.9")
    Face.objects.create(
        prediction=mine, index=0, x1=1, y1=2, x2=30, y2=40, detection_confidence=0.99,
        age=31.5, age_low=25, age_high=38, gender="female", gender_confidence=0.93,
    )  # fmt: skip

    response = client.get("/history/export.json")

    assert response["Content-Disposition"] == 'attachment; filename="age-gender-predictions.json"'
    records = response.json()["predictions"]
    assert [record["id"] for record in records] == [str(mine.id)]  # not kim's
    assert records[0]["original_name"] == "me.jpg" and records[0]["model_version"] == "agegender-fused 9.9"
    assert records[0]["faces"] == [
        {
            "box": [1, 2, 30, 40], "detected": True, "detection_confidence": 0.99, "age": 31.5,
            "age_low": 25.0, "age_high": 38.0, "gender": "female", "gender_confidence": 0.93,
            "left_eye": None, "right_eye": None,
        }
    ]  # fmt: skip
    assert "Download all results (JSON)" in client.get("/history/").content.decode()
    assert Client().get("/history/export.json").json()["predictions"] == []  # a newcomer has nothing
