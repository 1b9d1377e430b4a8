"""Stored files that no prediction names any more are found and deleted; nothing else is."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from predictions import services
from predictions.models import Prediction
from tests.conftest import stored_files

pytestmark = pytest.mark.django_db


def aged(path: Path, hours: float) -> Path:
    """Write the file (if it is not there) and make it `hours` old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(b"a face")
    then = time.time() - hours * 3600
    os.utime(path, (then, then))
    return path


@pytest.fixture
def storage_with_orphans(private_media, astronaut_jpeg) -> dict[str, list[Path]]:
    """Two predictions with their files (all two days old), and files no row names: old ones in each
    prediction folder, a new one (an upload on its way to its row), and an old one elsewhere."""
    kept = []
    for name in ("a.jpg", "b.jpg"):
        prediction = Prediction(session_key="visitor", original_name=name)
        prediction.image.save("upload.jpg", ContentFile(astronaut_jpeg), save=False)
        prediction.thumbnail.save("thumbnail.jpg", ContentFile(b"small"), save=False)
        prediction.save()
        kept += [
            aged(private_media / prediction.image.name, 48),
            aged(private_media / prediction.thumbnail.name, 48),
        ]
    display = Prediction.objects.first()
    display.display.save("display.jpg", ContentFile(b"lighter"))
    kept.append(aged(private_media / display.display.name, 48))
    orphans = [
        aged(private_media / "uploads/2026/10/0123456789abcdef0123456789abcdef.jpg", 24 * 40),
        aged(private_media / "thumbnails/2026/10/0123456789abcdef0123456789abcdef.jpg", 24 * 40),
        aged(private_media / "display/2026/11/fedcba9876543210fedcba9876543210.jpg", 2),
    ]
    kept += [
        aged(private_media / "uploads/2026/11/00000000000000000000000000000000.heic", 0.1),  # on its way
        aged(private_media / "elsewhere/notes.txt", 24 * 40),  # not a prediction's folder
    ]
    return {"orphans": orphans, "kept": kept}


def test_only_old_files_no_prediction_names_are_deleted(private_media, storage_with_orphans, capsys):
    call_command("delete_orphaned_files", "--dry-run")
    listed = capsys.readouterr().out.splitlines()
    orphans = sorted(path.relative_to(private_media).as_posix() for path in storage_with_orphans["orphans"])
    assert sorted(listed[:-1]) == orphans
    assert listed[-1] == "3 stored file(s) no prediction names (none deleted)."
    assert len(stored_files(private_media)) == 3 + len(storage_with_orphans["kept"])  # nothing deleted

    call_command("delete_orphaned_files")

    assert capsys.readouterr().out.strip() == "Deleted 3 stored file(s) no prediction named."
    assert stored_files(private_media) == sorted(storage_with_orphans["kept"])
    for prediction in Prediction.objects.all():  # every row still has its files
        assert prediction.image.read() and prediction.thumbnail.read()


def test_a_younger_limit_takes_the_upload_on_its_way_too(private_media, storage_with_orphans):
    assert services.files_delete_orphaned(older_than=timedelta(minutes=1)) == 4
    assert private_media / "elsewhere/notes.txt" in stored_files(private_media)
    assert not (private_media / "uploads/2026/11/00000000000000000000000000000000.heic").exists()


def test_the_daily_task_deletes_them(private_media, storage_with_orphans):
    from worker.tasks import delete_orphaned_files

    assert delete_orphaned_files() == 3
    assert stored_files(private_media) == sorted(storage_with_orphans["kept"])


def test_nothing_stored_yet_is_no_error(private_media):
    assert services.files_orphaned(older_than=timedelta(hours=1)) == []
