"""The same upload → worker → done flow with images on S3 (a real S3-compatible server from moto)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import boto3
import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from predictions.models import Prediction
from tests.conftest import wait_until_finished

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BUCKET = "agegender-test"
CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_storage(settings, s3_endpoint: str):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "agegender_site.storage.PrivateS3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                # As in Docker: servers and browsers reach the store under different names.
                "public_endpoint_url": s3_endpoint.replace("127.0.0.1", "localhost"),
                "region_name": "us-east-1",
                "default_acl": "private",
                "querystring_auth": True,
                "querystring_expire": 60,
                "file_overwrite": False,
                "addressing_style": "path",
                "signature_version": "s3v4",
                **CREDENTIALS,
            },
        },
    }
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def bucket_keys(s3) -> set[str]:
    return {item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_upload_to_s3_runs_to_done_and_serves_signed_short_lived_urls(
    client, celery_worker, s3_storage, astronaut_jpeg, django_capture_on_commit_callbacks
):
    response = client.post(
        "/", {"images": [SimpleUploadedFile("s3.jpg", astronaut_jpeg, content_type="image/jpeg")]}
    )
    assert response.status_code == 302
    prediction = Prediction.objects.get()
    assert prediction.image.name in bucket_keys(s3_storage)

    status = wait_until_finished(client, prediction.id)

    assert status["status"] == "done" and status["face_count"] == 1
    prediction.refresh_from_db()
    assert prediction.thumbnail.name in bucket_keys(s3_storage)

    image = client.get(f"/p/{prediction.id}/image/")
    assert image.status_code == 302
    signed = image["Location"]
    assert signed.startswith(s3_storage.meta.endpoint_url.replace("127.0.0.1", "localhost") + f"/{BUCKET}/")
    assert "X-Amz-Signature=" in signed and "X-Amz-Expires=60" in signed
    assert requests.get(signed, timeout=10).content == astronaut_jpeg
    assert Client().get(f"/p/{prediction.id}/image/").status_code == 404  # no signed URL for strangers

    client.post(f"/p/{prediction.id}/delete/")
    assert bucket_keys(s3_storage) == set()


def test_files_no_prediction_names_are_found_and_deleted_on_s3(s3_storage, astronaut_jpeg):
    from datetime import timedelta

    from django.core.files.base import ContentFile

    from predictions import services

    prediction = Prediction(session_key="visitor", original_name="a.jpg")
    prediction.image.save("upload.jpg", ContentFile(astronaut_jpeg))
    orphans = {"uploads/2026/10/0123456789abcdef.jpg", "thumbnails/2026/10/0123456789abcdef.jpg"}
    for key in [*orphans, "elsewhere/notes.txt"]:
        s3_storage.put_object(Bucket=BUCKET, Key=key, Body=b"a face")

    assert services.files_orphaned(older_than=timedelta(hours=1)) == []  # all just written
    assert set(services.files_orphaned(older_than=timedelta(0))) == orphans
    assert services.files_delete_orphaned(older_than=timedelta(0)) == 2

    assert bucket_keys(s3_storage) == {prediction.image.name, "elsewhere/notes.txt"}
    s3_storage.delete_object(Bucket=BUCKET, Key="elsewhere/notes.txt")
    prediction.delete()
