"""Django's upload handlers, keeping how long the file's name was as sent: Django cuts a name to 255
characters (and names the temporary file of a large upload after the name's end, which fails on a
name that long), so that a name too long could not be told to its sender otherwise."""

from __future__ import annotations

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler, TemporaryFileUploadHandler

#: As long as a file name may be (the database keeps 255 characters of it).
MAX_NAME_LENGTH = 255


class _KeepsNameLength:
    def new_file(self, field_name: str, file_name: str, *args: object, **kwargs: object) -> None:
        self.sent_name_length = len(file_name)
        if len(file_name) > MAX_NAME_LENGTH:  # what the page calls it by
            file_name = f"{file_name[:40]}…{file_name[-12:]}"
        super().new_file(field_name, file_name, *args, **kwargs)

    def file_complete(self, file_size: int) -> UploadedFile | None:
        file = super().file_complete(file_size)
        if file is not None:
            file.sent_name_length = self.sent_name_length
        return file


class MemoryHandler(_KeepsNameLength, MemoryFileUploadHandler):
    pass


class TemporaryFileHandler(_KeepsNameLength, TemporaryFileUploadHandler):
    pass


def sent_name_length(upload: UploadedFile) -> int:
    return getattr(upload, "sent_name_length", len(upload.name or ""))


def unreadable_upload_reason(error: Exception) -> str:
    """What to tell the sender of an upload Django could not parse (`MultiPartParserError`)."""
    if "header size" in str(error):  # a part's headers are limited to 1 KB: only a name gets that long
        return (
            f"A file name is far too long: names may be at most {MAX_NAME_LENGTH} characters. Rename the "
            "file and send it again. Nothing was uploaded."
        )
    return "The upload could not be read (it was cut off or damaged). Nothing was uploaded."
