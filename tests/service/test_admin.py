"""Admin: predictions listed with thumbnail, status, owner, face count and model version; re-run."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile

from predictions.models import Face, Prediction
from tests.conftest import stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def done_prediction(astronaut_jpeg) -> Prediction:
    owner = get_user_model().objects.create_user(username="erin", password="x")
    prediction = Prediction(
        original_name="erin.jpg", owner=owner, status="done", model_version="agegender-cnn 9.9.9"
    )
    prediction.image.save("erin.jpg", ContentFile(astronaut_jpeg), save=True)
    Face.objects.create(
        prediction=prediction, index=0, x1=1, y1=2, x2=30, y2=40, detection_confidence=0.99,
        age=31.5, age_low=25, age_high=38, gender="female", gender_confidence=0.93,
    )  # fmt: skip
    return prediction


def test_changelist_shows_thumbnail_status_owner_face_count_and_version(admin_client, done_prediction):
    page = admin_client.get("/admin/predictions/prediction/").content.decode()

    assert f"/p/{done_prediction.id}/thumbnail/" in page
    assert "erin" in page and "agegender-cnn 9.9.9" in page
    assert '<td class="field-face_count">1</td>' in page
    assert "By status" in page and "By model version" in page


def test_filters_and_owner_search(admin_client, done_prediction):
    assert (
        "erin.jpg" in admin_client.get("/admin/predictions/prediction/?status__exact=done").content.decode()
    )
    assert (
        "erin.jpg"
        not in admin_client.get("/admin/predictions/prediction/?status__exact=failed").content.decode()
    )
    assert "erin.jpg" in admin_client.get("/admin/predictions/prediction/?q=erin").content.decode()
    assert "erin.jpg" not in admin_client.get("/admin/predictions/prediction/?q=zed").content.decode()


def test_change_page_has_the_faces_inline(admin_client, done_prediction):
    page = admin_client.get(f"/admin/predictions/prediction/{done_prediction.id}/change/").content.decode()
    assert "Faces" in page and "0.93" in page
    for label in ("Enqueued at", "Display", "Thumbnail"):  # when the broker took its job; the copies
        assert label in page, label


def test_the_change_page_links_the_files_to_the_views_that_serve_them(admin_client, done_prediction):
    """The stored files have no public URL (`/uploads/…` is a 404): each link goes to a view that checks
    who may see it, and staff may."""
    import re

    page = admin_client.get(f"/admin/predictions/prediction/{done_prediction.id}/change/").content.decode()
    links = re.findall(r'<a href="([^"]+)">(?:uploads|thumbnails|display)/', page)

    assert f"/p/{done_prediction.id}/original/" in links
    assert not re.search(r'href="/?(uploads|thumbnails|display)/', page)
    for link in links:
        assert admin_client.get(link).status_code == 200, link


def test_rerun_action_requeues_and_enqueues_after_commit(
    admin_client, done_prediction, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            "/admin/predictions/prediction/",
            {"action": "rerun", "_selected_action": [str(done_prediction.id)]},
        )

    assert response.status_code == 302
    done_prediction.refresh_from_db()
    assert done_prediction.status == "queued"
    assert len(callbacks) == 1


def _with_thumbnail(prediction: Prediction, jpeg: bytes) -> Prediction:
    prediction.thumbnail.save("thumb.jpg", ContentFile(jpeg), save=True)
    return prediction


@pytest.mark.django_db(transaction=True)  # files go once the delete has committed
class TestDeletingRowsDeletesTheirPhotos:
    """Photos of faces must not outlive their rows, whoever deletes them."""

    def test_staff_delete_one_prediction(self, admin_client, done_prediction, private_media, astronaut_jpeg):
        _with_thumbnail(done_prediction, astronaut_jpeg)
        assert len(stored_files(private_media)) == 2
        response = admin_client.post(
            f"/admin/predictions/prediction/{done_prediction.pk}/delete/", {"post": "yes"}
        )
        assert response.status_code == 302
        assert not Prediction.objects.exists() and stored_files(private_media) == []

    def test_staff_delete_several_with_the_bulk_action(self, admin_client, private_media, astronaut_jpeg):
        owner = get_user_model().objects.create_user(username="finn", password="x")
        rows = []
        for name in ("a.jpg", "b.jpg"):
            prediction = Prediction(original_name=name, owner=owner)
            prediction.image.save(name, ContentFile(astronaut_jpeg), save=True)
            rows.append(_with_thumbnail(prediction, astronaut_jpeg))
        assert len(stored_files(private_media)) == 4
        response = admin_client.post(
            "/admin/predictions/prediction/",
            {"action": "delete_selected", "_selected_action": [str(p.pk) for p in rows], "post": "yes"},
        )
        assert response.status_code == 302
        assert not Prediction.objects.exists() and stored_files(private_media) == []

    def test_deleting_a_user_deletes_their_photos(self, done_prediction, private_media):
        assert len(stored_files(private_media)) == 1
        done_prediction.owner.delete()
        assert not Prediction.objects.exists() and stored_files(private_media) == []
