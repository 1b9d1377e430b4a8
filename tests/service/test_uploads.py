"""Bad uploads get a clear message next to the file, and leave no row and no stored file behind."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from predictions.models import Prediction
from tests.conftest import stored_files

pytestmark = pytest.mark.django_db


def post_files(client, *files: SimpleUploadedFile):
    return client.post("/", {"images": list(files)})


def jpeg(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="image/jpeg")


@pytest.mark.parametrize(
    ("make_file", "message"),
    [
        (lambda img: jpeg("notes.jpg", b"these are my notes, not a photo\n" * 20), "not an image"),
        (lambda img: jpeg("empty.jpg", b""), "The file is empty."),
        (lambda img: jpeg("truncated.jpg", img[: len(img) // 2]), "incomplete"),
        (
            lambda img: SimpleUploadedFile("photo.gif", img, content_type="image/gif"),
            "Only JPG, JPEG, JFIF, PNG, WEBP",
        ),
        (lambda img: SimpleUploadedFile("script.exe", img), "Only JPG, JPEG, JFIF, PNG, WEBP"),
        (lambda img: jpeg("noextension", img), "Only JPG, JPEG, JFIF, PNG, WEBP"),
    ],
    ids=["not-an-image", "empty", "truncated", "gif-extension", "exe-extension", "no-extension"],
)
def test_bad_upload_is_rejected_with_a_clear_message_and_nothing_stored(
    client, private_media, astronaut_jpeg, make_file, message
):
    upload = make_file(astronaut_jpeg)
    response = post_files(client, upload)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert upload.name in response.content.decode()  # the message sits next to the file's name
    assert Prediction.objects.count() == 0
    assert stored_files(private_media) == []


def test_too_big_upload_is_rejected_with_the_limit_in_the_message(
    client, settings, private_media, astronaut_jpeg
):
    settings.AGEGENDER_MAX_UPLOAD_BYTES = len(astronaut_jpeg) - 1

    response = post_files(client, jpeg("big.jpg", astronaut_jpeg))

    assert response.status_code == 400
    assert "the limit is" in response.content.decode()
    assert Prediction.objects.count() == 0
    assert stored_files(private_media) == []


def test_image_whose_content_is_not_an_allowed_format_is_rejected(client, private_media):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="GIF")
    response = post_files(client, jpeg("disguised.jpg", buffer.getvalue()))

    assert response.status_code == 400
    assert "is a GIF image" in response.content.decode()
    assert Prediction.objects.count() == 0


def test_no_file_at_all_asks_for_a_photo(client):
    response = client.post("/", {})
    assert response.status_code == 400
    assert "Choose at least one photo." in response.content.decode()


def test_good_files_of_a_batch_go_on_when_one_is_rejected(
    client, private_media, astronaut_jpeg, no_face_jpeg, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_files(
            client,
            jpeg("first.jpg", astronaut_jpeg),
            jpeg("broken.jpg", b"nope"),
            jpeg("third.jpg", no_face_jpeg),
        )

    created = list(Prediction.objects.order_by("created_at"))
    assert [p.original_name for p in created] == ["first.jpg", "third.jpg"]
    assert all(p.status == Prediction.Status.QUEUED for p in created)
    # Post/redirect/get: the results page of both photos, in the order they were sent.
    assert response.status_code == 302
    assert response["Location"] == f"/results/?ids={created[0].id}%2C{created[1].id}"
    page = client.get(response["Location"]).content.decode()
    assert "broken.jpg" in page and "not an image" in page  # the refusal is said once, on that page
    assert page.index(f"/p/{created[0].id}/") < page.index(f"/p/{created[1].id}/")
    assert page.count('class="result card"') == 2
    for prediction in created:
        assert f"/p/{prediction.id}/status/" in page  # each card polls its own status
        assert (private_media / prediction.image.name).read_bytes() in (astronaut_jpeg, no_face_jpeg)
    assert len(stored_files(private_media)) == 2
    assert len(callbacks) == 2  # one job enqueued per accepted photo, after the commit
    assert "broken.jpg" not in client.get(response["Location"]).content.decode()  # not on a reload


def test_one_good_photo_beside_a_refused_one_goes_to_its_page_with_the_refusal_said(
    client, astronaut_jpeg, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        response = post_files(client, jpeg("me.jpg", astronaut_jpeg), jpeg("empty.jpg", b""))

    prediction = Prediction.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/p/{prediction.id}/"
    page = client.get(response["Location"]).content.decode()
    assert "empty.jpg" in page and "empty" in page.split("empty.jpg", 1)[1][:200]


def test_when_every_file_is_refused_the_form_says_why_and_nothing_is_kept(client, private_media):
    response = post_files(client, jpeg("a.jpg", b"nope"), jpeg("b.jpg", b"nor this"))

    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was uploaded" in page and "a.jpg" in page and "b.jpg" in page
    assert Prediction.objects.count() == 0
    assert stored_files(private_media) == []


def test_single_good_upload_redirects_to_its_result_page(
    client, astronaut_jpeg, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        response = post_files(client, jpeg("me.jpg", astronaut_jpeg))

    prediction = Prediction.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/p/{prediction.id}/"
    assert (prediction.image_width, prediction.image_height) == (512, 512)
    assert prediction.image.name.endswith(".jpg")


def test_heic_photo_is_stored_as_sent_without_being_decoded(
    client, private_media, sideways_heic, django_capture_on_commit_callbacks, monkeypatch
):
    """Decoding a phone's 12-MP HEIC takes up to a second: the upload checks its header and that the file
    is whole, and leaves the decoding to the worker."""
    from pillow_heif import as_plugin

    def no_decoding(self):
        raise AssertionError("the upload decoded the picture")

    monkeypatch.setattr(as_plugin._LibHeifImageFile, "load", no_decoding)
    upload = SimpleUploadedFile("IMG_0042.HEIC", sideways_heic, content_type="image/heic")
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_files(client, upload)

    assert response.status_code == 302, response.content.decode()
    prediction = Prediction.objects.get()
    assert prediction.original_name == "IMG_0042.HEIC"
    assert prediction.image.name.endswith(".heic")
    assert (prediction.image_width, prediction.image_height) == (384, 512)  # upright: portrait
    assert (private_media / prediction.image.name).read_bytes() == sideways_heic
    assert stored_files(private_media) == [private_media / prediction.image.name]
    assert len(callbacks) == 1


def test_camera_jpeg_with_a_second_picture_inside_is_accepted_as_it_is(client, private_media):
    """Cameras and phones write a large preview or a depth map after the photo (CIPA's Multi-Picture
    Format); Pillow calls such a JPEG "MPO", and it must not be refused as a foreign format."""
    import io

    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    buffer = io.BytesIO()
    photo.save(buffer, format="MPO", save_all=True, append_images=[photo.resize((160, 160))])
    with Image.open(io.BytesIO(buffer.getvalue())) as opened:
        assert opened.format == "MPO"

    response = post_files(client, jpeg("P1010670.JPG", buffer.getvalue()))

    assert response.status_code == 302, response.content.decode()
    prediction = Prediction.objects.get()
    assert prediction.image.name.endswith(".jpg")
    assert (prediction.image_width, prediction.image_height) == (512, 512)
    assert (private_media / prediction.image.name).read_bytes() == buffer.getvalue()  # stored untouched


@pytest.mark.parametrize(
    ("name", "fmt", "stored_as", "content_type"),
    [("photo.avif", "AVIF", ".avif", "image/avif"), ("photo.jfif", "JPEG", ".jpg", "image/jpeg")],
)
def test_avif_and_jfif_photos_are_accepted_and_served_as_what_they_are(
    client, private_media, name, fmt, stored_as, content_type
):
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format=fmt)

    response = post_files(client, SimpleUploadedFile(name, buffer.getvalue()))

    assert response.status_code == 302, response.content.decode()
    prediction = Prediction.objects.get()
    assert prediction.image.name.endswith(stored_as)
    assert (private_media / prediction.image.name).read_bytes() == buffer.getvalue()
    assert client.get(f"/p/{prediction.id}/image/")["Content-Type"] == content_type


def test_truncated_heic_is_rejected_as_incomplete(client, private_media, sideways_heic):
    upload = SimpleUploadedFile("IMG_0043.HEIC", sideways_heic[: len(sideways_heic) // 2])
    response = post_files(client, upload)

    assert response.status_code == 400
    assert "incomplete" in response.content.decode()
    assert Prediction.objects.count() == 0
    assert stored_files(private_media) == []


@pytest.mark.parametrize("cut", [100, 2000, -1])
def test_a_heic_cut_anywhere_is_told_without_decoding_it(sideways_heic, cut, monkeypatch):
    """The upload does not decode a HEIC; ExifTool tells a file cut short, within its index (Pillow cannot
    even tell what it is) or within the picture (its last byte missing)."""
    from pillow_heif import as_plugin

    from predictions.uploads import UploadRejected, check_image_upload

    monkeypatch.setattr(as_plugin._LibHeifImageFile, "load", lambda self: pytest.fail("decoded"))
    assert check_image_upload(SimpleUploadedFile("whole.heic", sideways_heic)).extension == "heic"
    with pytest.raises(UploadRejected, match="incomplete"):
        check_image_upload(SimpleUploadedFile("cut.heic", sideways_heic[:cut]))


def test_row_and_file_both_vanish_when_the_row_cannot_be_saved(
    client, private_media, astronaut_jpeg, monkeypatch
):
    def broken_save(self, *args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Prediction, "save", broken_save)
    client.raise_request_exception = False
    response = post_files(client, jpeg("me.jpg", astronaut_jpeg))

    assert response.status_code == 500
    monkeypatch.undo()
    assert Prediction.objects.count() == 0
    assert stored_files(private_media) == []


def test_more_photos_than_one_upload_takes_are_refused_with_a_message(
    client, settings, private_media, astronaut_jpeg
):
    settings.AGEGENDER_MAX_FILES_PER_UPLOAD = 3
    response = post_files(client, *(jpeg(f"{i}.jpg", astronaut_jpeg) for i in range(4)))

    assert response.status_code == 400
    assert "At most 3 photos at a time: you chose 4." in response.content.decode()
    assert Prediction.objects.count() == 0
    assert stored_files(private_media) == []


def test_a_request_of_far_more_files_gets_a_page_that_says_so(client, settings, astronaut_jpeg):
    """Beyond DATA_UPLOAD_MAX_NUMBER_FILES Django refuses the request before the view: our 400 page, not
    Django's bare one."""
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    response = post_files(client, *(jpeg(f"{i}.jpg", astronaut_jpeg) for i in range(3)))

    assert response.status_code == 400
    page = response.content.decode()
    assert "Could not read the request" in page and "Nothing was uploaded" in page
    assert Prediction.objects.count() == 0


class TestTheUploadScriptsJsonAnswers:
    """The page's script posts with `Accept: application/json` (to show upload progress) and is told where
    to go, or what was refused; the plain form post above gets redirects and pages."""

    @staticmethod
    def post(client, *files: SimpleUploadedFile):
        return client.post("/", {"images": list(files)}, headers={"Accept": "application/json"})

    def test_one_photo_is_sent_to_its_page(self, client, astronaut_jpeg, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks() as callbacks:
            response = self.post(client, jpeg("me.jpg", astronaut_jpeg))
        prediction = Prediction.objects.get()
        assert response.status_code == 200
        assert response.json() == {"location": f"/p/{prediction.id}/"}
        assert len(callbacks) == 1

    def test_several_go_to_their_results_page_and_refusals_wait_there(
        self, client, astronaut_jpeg, no_face_jpeg, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks():
            response = self.post(
                client, jpeg("a.jpg", astronaut_jpeg), jpeg("b.jpg", b"nope"), jpeg("c.jpg", no_face_jpeg)
            )
        first, third = Prediction.objects.order_by("created_at")
        assert response.json() == {"location": f"/results/?ids={first.id}%2C{third.id}"}
        page = client.get(response.json()["location"]).content.decode()
        assert "b.jpg: " in page and "not an image" in page

    def test_all_refused_says_each_reason(self, client, private_media):
        response = self.post(client, jpeg("a.jpg", b"nope"), jpeg("b.jpg", b""))
        assert response.status_code == 400
        refused = response.json()["refused"]
        assert [item["name"] for item in refused] == ["a.jpg", "b.jpg"]
        assert "not an image" in refused[0]["error"] and "empty" in refused[1]["error"]
        assert Prediction.objects.count() == 0 and stored_files(private_media) == []

    def test_no_file_or_too_many_is_a_form_error(self, client, settings, astronaut_jpeg):
        assert self.post(client).json() == {"errors": ["Choose at least one photo."], "refused": []}
        settings.AGEGENDER_MAX_FILES_PER_UPLOAD = 1
        response = self.post(client, jpeg("a.jpg", astronaut_jpeg), jpeg("b.jpg", astronaut_jpeg))
        assert response.status_code == 400
        assert response.json()["errors"][0].startswith("At most 1 photo at a time: you chose 2.")
        assert Prediction.objects.count() == 0


def test_a_missing_page_is_ours_and_says_why(client):
    response = client.get("/p/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Not found" in page and "belongs to someone else" in page and 'href="/"' in page


def test_a_webp_past_its_lower_pixel_limit_is_refused_saying_the_limit(client, private_media):
    """WebP decodes only at full size (20 MP at most); a JPEG of the same 21 MP decodes reduced."""
    flat = Image.new("RGB", (5000, 4200), (120, 110, 100))
    sent = {}
    for fmt in ("WEBP", "JPEG"):
        buffer = io.BytesIO()
        flat.save(buffer, format=fmt, quality=50)
        sent[fmt] = buffer.getvalue()

    response = post_files(client, SimpleUploadedFile("big.webp", sent["WEBP"], content_type="image/webp"))
    assert response.status_code == 400
    assert "The image is 5000×4200 pixels; the limit is 20 megapixels for a WEBP photo" in (
        response.content.decode()
    )
    assert Prediction.objects.count() == 0
    assert stored_files(private_media) == []

    response = post_files(client, jpeg("big.jpg", sent["JPEG"]))
    assert response.status_code == 302
    assert (Prediction.objects.get().image_width, Prediction.objects.get().image_height) == (5000, 4200)


def test_the_web_and_the_engine_limit_the_same_formats():
    from ml.images import FULL_DECODE_FORMATS as engine
    from predictions.uploads import FULL_DECODE_FORMATS as web

    assert web == engine
