"""The status JSON and the upload form: one name for one thing across engine, database and API."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from ml.faces import Face as EngineFace
from predictions.models import Face, Prediction

pytestmark = pytest.mark.django_db


def test_face_json_has_exactly_the_engine_field_names_and_values(astronaut_jpeg):
    engine_face = EngineFace(
        box=(182, 64, 265, 171), detected=True, detection_confidence=0.9991, age=33.4, age_low=27.0,
        age_high=41.0, gender="female", gender_confidence=0.9712,
        landmarks=((203.6, 104.2), (241.4, 103.5), (222.0, 125.0), (206.0, 146.0), (238.0, 145.0)),
    )  # fmt: skip
    prediction = Prediction(original_name="a.jpg", session_key="visitor", status="done")
    prediction.image.save("a.jpg", ContentFile(astronaut_jpeg), save=True)
    data = engine_face.to_dict()
    Face.objects.create(
        prediction=prediction,
        index=0,
        **dict(zip(("x1", "y1", "x2", "y2"), data.pop("box"), strict=True)),
        **data,
    )
    client = Client()
    session = client.session
    session["predictions_visitor"] = "visitor"
    session.save()

    payload = client.get(f"/p/{prediction.id}/status/").json()

    assert payload["faces"] == [engine_face.to_dict()]
    # The person's own eyes, as DeepFace names them: the left one is on the right of the photo.
    assert payload["faces"][0]["left_eye"] == [241, 104] and payload["faces"][0]["right_eye"] == [204, 104]
    assert payload["status"] == "done" and payload["finished"] is True and payload["face_count"] == 1


def test_status_is_not_cached_and_queued_has_no_faces(client, astronaut_jpeg):
    session = client.session
    session["predictions_visitor"] = "v"
    session.save()
    prediction = Prediction(original_name="a.jpg", session_key="v")
    prediction.image.save("a.jpg", ContentFile(astronaut_jpeg), save=True)

    response = client.get(f"/p/{prediction.id}/status/")

    assert response["Cache-Control"] == "no-store"
    assert response.json()["status"] == "queued" and response.json()["finished"] is False
    assert response.json()["faces"] == []


def test_upload_form_works_without_javascript(client):
    page = client.get("/").content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert 'type="file"' in page and "multiple" in page
    assert 'accept=".jpg,.jpeg,.jfif,.png,.webp,.heic,.heif,.avif"' in page
    assert "csrfmiddlewaretoken" in page
