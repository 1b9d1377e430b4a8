"""DeepFace's `POST /analyze`, sent as DeepFace's own API tests and clients send it (tests/test_api.py of
serengil/deepface: JSON `img` as a data URI or plain base64, the older `img_path`, a multipart file with
`actions` as a string), answered by the real worker in DeepFace's shape."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth import get_user_model

from predictions.api.analyze import NO_FACE
from predictions.api.tokens import token_create
from predictions.models import Prediction

pytestmark = pytest.mark.django_db


@pytest.fixture
def key() -> str:
    user = get_user_model().objects.create_user("ada", password="a-long-password-1")
    return token_create(user=user, name="deepface client")[1]


def auth(key: str) -> dict:
    return {"Authorization": f"Token {key}"}


def post_json(client, key: str, body: dict):
    return client.post("/analyze", body, content_type="application/json", headers=auth(key))


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("utf8")


def assert_deepface_shape(result: dict, faces: int) -> list[dict]:
    assert isinstance(result.get("results"), list) and len(result["results"]) == faces, result
    for face in result["results"]:
        assert isinstance(face["age"], int)
        assert face["dominant_gender"] in ["Man", "Woman"]
        assert set(face["gender"]) == {"Woman", "Man"}
        assert abs(face["gender"]["Woman"] + face["gender"]["Man"] - 100) < 0.01
        assert max(face["gender"], key=face["gender"].get) == face["dominant_gender"]
        assert set(face["region"]) == {"x", "y", "w", "h", "left_eye", "right_eye"}
        assert face["region"]["w"] > 0 and face["region"]["h"] > 0
        assert isinstance(face["face_confidence"], float)
    return result["results"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_every_input_format_deepface_sends_gives_the_same_answer(client, celery_worker, key, astronaut_jpeg):
    encoded = base64.b64encode(astronaut_jpeg).decode("utf8")
    answers = [
        post_json(client, key, {"img": data_uri(astronaut_jpeg)}),
        post_json(client, key, {"img": encoded, "actions": ["age", "gender"]}),
        post_json(client, key, {"img_path": data_uri(astronaut_jpeg)}),
        client.post(  # multipart, as DeepFace's test_analyze_for_multipart_form_data
            "/analyze",
            {"img": _file(astronaut_jpeg, "test_image.jpg"), "actions": '["age", "gender"]',
             "detector_backend": "mtcnn"},
            headers=auth(key),
        ),
        client.post("/analyze", {"img": data_uri(astronaut_jpeg)}, headers=auth(key)),  # form field, no file
    ]  # fmt: skip

    results = []
    for response in answers:
        assert response.status_code == 200, response.content
        results.append(assert_deepface_shape(response.json(), faces=1)[0])
    assert {r["dominant_gender"] for r in results} == {"Woman"}
    assert len({(r["age"], str(r["region"])) for r in results}) == 1
    assert results[0]["gender"]["Woman"] > 50
    region = results[0]["region"]
    for eye in (region["left_eye"], region["right_eye"]):  # [x, y], whole pixels of the photo
        assert len(eye) == 2 and all(isinstance(v, int) for v in eye)
        assert (
            region["x"] < eye[0] < region["x"] + region["w"]
            and region["y"] < eye[1] < region["y"] + region["h"]
        )
    # DeepFace's left eye is the person's own: on the right of the photo; both above the box's middle.
    assert region["left_eye"][0] > region["right_eye"][0]
    assert abs(region["left_eye"][1] - region["right_eye"][1]) < region["h"] / 4
    assert max(region["left_eye"][1], region["right_eye"][1]) < region["y"] + region["h"] / 2
    # Each photo went through the queue as an upload does, and stays in its sender's history.
    assert Prediction.objects.filter(owner__username="ada", status="done").count() == len(answers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_faces_and_a_photo_without_one(client, celery_worker, key, two_faces_jpeg, no_face_jpeg):
    two = post_json(client, key, {"img": data_uri(two_faces_jpeg)})
    for face in assert_deepface_shape(two.json(), faces=2):
        assert face["region"]["left_eye"][0] > face["region"]["right_eye"][0]

    none = post_json(client, key, {"img": data_uri(no_face_jpeg)})
    assert none.status_code == 400 and none.json()["error"] == NO_FACE  # DeepFace's enforce_detection

    whole = post_json(client, key, {"img": data_uri(no_face_jpeg), "enforce_detection": False})
    [face] = assert_deepface_shape(whole.json(), faces=1)
    assert face["face_confidence"] == 0.0 and face["region"] == {
        "x": 0, "y": 0, "w": 480, "h": 360, "left_eye": None, "right_eye": None
    }  # fmt: skip


@pytest.mark.parametrize(
    ("actions", "named"),
    [
        (["age", "gender", "emotion", "race"], "emotion, race"),
        ('["emotion"]', "emotion"),
        (["age", "smile"], "smile"),
    ],
)
def test_analyses_this_model_cannot_make_are_named_in_a_400(client, key, astronaut_jpeg, actions, named):
    body = {"img": data_uri(astronaut_jpeg), "actions": actions}
    response = post_json(client, key, body)
    assert response.status_code == 400
    assert f"it cannot do: {named}." in response.json()["error"]
    assert not Prediction.objects.exists()


@pytest.mark.parametrize(
    ("img", "says"),
    [
        (
            "https://github.com/serengil/deepface/blob/master/tests/dataset/couple.jpg?raw=true",
            "fetches nothing",
        ),
        ("dataset/invalid.jpg", "not a base64-encoded image"),  # DeepFace's test_invalid_analyze
        ("data:image/jpeg;base64," + base64.b64encode(b"not a photo").decode(), "not an image"),
        ("", "'img' not found"),
    ],
)
def test_urls_paths_and_bad_images_are_refused_with_a_400(client, key, img, says):
    response = post_json(client, key, {"img": img})
    assert response.status_code == 400 and says in response.json()["error"]
    assert not Prediction.objects.exists()


def test_a_wait_that_runs_out_is_a_503_with_retry_after(
    client, key, settings, jobs_go_nowhere, astronaut_jpeg
):
    settings.AGEGENDER_ANALYZE_WAIT_SECONDS = 0.5
    response = post_json(client, key, {"img": data_uri(astronaut_jpeg)})
    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    prediction = Prediction.objects.get()
    assert response.json()["prediction"] == f"http://testserver/api/v1/predictions/{prediction.id}/"
    assert client.get(response.json()["prediction"], headers=auth(key)).json()["status"] == "queued"


def test_analyze_spends_the_tokens_allowance(
    client, key, upload_allowance, jobs_go_nowhere, astronaut_jpeg, settings
):
    settings.AGEGENDER_ANALYZE_WAIT_SECONDS = 0
    upload_allowance(1)
    body = {"img": data_uri(astronaut_jpeg)}
    assert post_json(client, key, body).status_code == 503
    refused = post_json(client, key, body)
    assert refused.status_code == 429 and "Retry-After" in refused


def test_a_json_body_beyond_the_photo_limit_is_refused_unread(client, key, settings):
    settings.AGEGENDER_MAX_UPLOAD_BYTES = 1000
    body = {"img": "A" * 100_000}
    response = post_json(client, key, body)
    assert response.status_code == 413


def _file(content: bytes, name: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="image/jpeg")
