"""The predictions' stored files: the photo's renditions as the worker saves them, deletion once a
delete commits, and files that no row names any more."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from predictions.models import Prediction

logger = logging.getLogger(__name__)


def delete_on_commit(names: Iterable[str]) -> None:
    storage = Prediction._meta.get_field("image").storage
    for name in [name for name in names if name]:
        transaction.on_commit(lambda name=name: storage.delete(name))


def save_rendition(field_name: str, prediction_id: uuid.UUID | str, jpeg: bytes | None) -> str:
    """Store a JPEG made from the photo (thumbnail, display copy) under its field's name; "" for none."""
    if not jpeg:
        return ""
    field = Prediction._meta.get_field(field_name)
    name = field.generate_filename(Prediction(id=uuid.UUID(str(prediction_id))), f"{field_name}.jpg")
    return field.storage.save(name, ContentFile(jpeg))


#: The storage folders of the predictions' files (`Prediction.image`, `.thumbnail`, `.display`).
PREDICTION_FOLDERS = ("uploads", "thumbnails", "display")


def files_orphaned(*, older_than: timedelta) -> list[str]:
    """Stored files of predictions that no row names any more, last written more than `older_than` ago.

    Every way a row is deleted takes its files along (the delete signal), but files outlive their rows
    where that was not so (admin deletes before 2026-11-27), where rows are deleted without signals
    (a queryset `update`, SQL by hand), or where a process dies between storing a file and writing its
    row. The names the rows hold are read first and the files listed after, and a file younger than
    `older_than` is never taken, so an upload or a worker's rendition still on its way to its row is
    left alone."""
    storage = Prediction._meta.get_field("image").storage
    named: set[str] = set()
    for names in Prediction.objects.values_list("image", "thumbnail", "display").iterator(chunk_size=2000):
        named.update(name for name in names if name)
    cutoff = timezone.now() - older_than
    return [
        name
        for folder in PREDICTION_FOLDERS
        for name in _stored_names(storage, folder)
        if name not in named and storage.get_modified_time(name) < cutoff
    ]


def _stored_names(storage: Any, folder: str) -> Iterable[str]:
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:  # nothing ever stored there (a local storage; S3 lists nothing instead)
        return
    for name in sorted(files):
        yield f"{folder}/{name}"
    for sub in sorted(folders):
        yield from _stored_names(storage, f"{folder}/{sub}")


def files_delete_orphaned(*, older_than: timedelta = timedelta(hours=1)) -> int:
    """Delete the files `files_orphaned` finds; returns how many."""
    storage = Prediction._meta.get_field("image").storage
    orphans = files_orphaned(older_than=older_than)
    for name in orphans:
        storage.delete(name)
    if orphans:
        logger.info("Deleted %d stored file(s) that no prediction names", len(orphans))
    return len(orphans)
