"""A prediction is one uploaded photo and the job that estimates age and gender for its faces."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from django.conf import settings
from django.db import models
from django.utils import timezone

if TYPE_CHECKING:
    import ml


def _upload_to(instance: Prediction, filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    return f"uploads/{timezone.now():%Y/%m}/{instance.id.hex}.{extension}"


def _thumbnail_to(instance: Prediction, filename: str) -> str:
    return f"thumbnails/{timezone.now():%Y/%m}/{instance.id.hex}.jpg"


def _display_to(instance: Prediction, filename: str) -> str:
    return f"display/{timezone.now():%Y/%m}/{instance.id.hex}.jpg"


#: How many faces a list (the history) names for each photo.
BRIEF_FACES = 3


class Prediction(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="predictions"
    )
    # For anonymous visitors: a random key kept in their session (it survives the key rotation at login).
    session_key = models.CharField(max_length=64, blank=True, db_index=True)
    image = models.FileField(upload_to=_upload_to, max_length=255)
    original_name = models.CharField(max_length=255)
    thumbnail = models.FileField(upload_to=_thumbnail_to, max_length=255, blank=True)
    #: The photo upright and at most `worker.images.DISPLAY_MAX_SIDE` pixels a side, for the result pages
    #: (a phone's 12-MP photo is ten times lighter); empty for photos that small already.
    display = models.FileField(upload_to=_display_to, max_length=255, blank=True)
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    #: The sender says the photo is a face (a tight crop): where no face is found, the engine reads the
    #: whole photo as one (`whole_image_fallback`), and says it did so (`Face.detected` false).
    as_one_face = models.BooleanField("read as one face", default=False)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.CharField(max_length=500, blank=True)
    #: Failed for a reason that was not the photo's (the worker's, or time): its sender may try again.
    retryable = models.BooleanField(default=False)
    model_version = models.CharField(max_length=100, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    inference_ms = models.PositiveIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    #: When its job was last handed to the broker; empty while queued means the broker could not be
    #: reached then, and the job is sent again (`outbox.sweep`).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: The id of the broker message that now carries its job (new at each send but a retry's): a worker
    #: given another message for this row, one that was sent again since, ignores it, and a worker whose
    #: job was taken back cannot record its result. Empty for rows from before it existed.
    job_id = models.UUIDField(null=True, blank=True)
    #: While processing: until when its worker holds the job; renewed while it works. A job whose lease
    #: has run out (its worker died) is taken back and sent again (`outbox.sweep`).
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(owner__isnull=False) | ~models.Q(session_key=""),
                name="prediction_has_owner",
            )
        ]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def readable_as_one_face(self) -> bool:
        """Finished with no face found, and not yet read as one face: its sender may ask for that."""
        return self.status == self.Status.DONE and not self.as_one_face and not self.faces.all()

    @property
    def can_try_again(self) -> bool:
        """Failed, but not because of the photo: its sender may ask for it to be read again."""
        return self.status == self.Status.FAILED and self.retryable

    @property
    def awaits_preview(self) -> bool:
        """A photo browsers cannot show (a HEIC, stored as sent) that the worker has not yet copied as a
        JPEG (`display`): the pages show a placeholder its size until then."""
        return not self.display and self.image.name.lower().endswith((".heic", ".heif"))

    @property
    def faces_in_brief(self) -> str:
        """The first faces as "female 37, male 23, male 38, +3 more" (for lists; app.js says it alike)."""
        faces = list(self.faces.all())
        parts = [f"{face.gender} {int(face.age + 0.5)}" for face in faces[:BRIEF_FACES]]  # as the pages round
        if len(faces) > BRIEF_FACES:
            parts.append(f"+{len(faces) - BRIEF_FACES} more")
        return ", ".join(parts)

    @property
    def total_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return round((self.finished_at - self.created_at).total_seconds() * 1000)


class Face(models.Model):
    """One face of a prediction: an `ml.Face` as stored (its box as x1..y2), and as the JSON status API
    shows it (`to_dict`)."""

    class Gender(models.TextChoices):
        FEMALE = "female", "Female"
        MALE = "male", "Male"

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="faces")
    index = models.PositiveSmallIntegerField()
    x1 = models.IntegerField()
    y1 = models.IntegerField()
    x2 = models.IntegerField()
    y2 = models.IntegerField()
    # The engine's result, field for field (`ml.Face`; `RESULT_FIELDS`).
    detected = models.BooleanField(default=True)
    detection_confidence = models.FloatField()
    age = models.FloatField()
    age_low = models.FloatField()
    age_high = models.FloatField()
    gender = models.CharField(max_length=8, choices=Gender.choices)
    gender_confidence = models.FloatField()
    # The person's own eyes (DeepFace's names: the left one is on the right of the photo), [x, y] in
    # pixels of the upright photo; null for a face read as the whole photo, and for faces stored before.
    left_eye = models.JSONField(null=True, blank=True, default=None)
    right_eye = models.JSONField(null=True, blank=True, default=None)

    #: Decimals shown of the float fields (the rest: one).
    _DECIMALS = {"detection_confidence": 4, "gender_confidence": 4}

    class Meta:
        ordering = ["prediction", "index"]
        constraints = [models.UniqueConstraint(fields=["prediction", "index"], name="face_unique_index")]

    def __str__(self) -> str:
        return f"face {self.index}: {self.gender}, {self.age:.0f}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    @classmethod
    def from_result(cls, result: ml.Face, *, prediction: Prediction, index: int) -> Face:
        x1, y1, x2, y2 = (int(value) for value in result.box)
        fields = {name: getattr(result, name) for name in RESULT_FIELDS}
        fields.update({name: list(value) for name, value in fields.items() if isinstance(value, tuple)})
        return cls(prediction=prediction, index=index, x1=x1, y1=y1, x2=x2, y2=y2, **fields)

    def to_dict(self) -> dict:
        """The JSON shape of `ml.Face.to_dict()`, floats rounded as shown."""
        data: dict = {"box": list(self.box)}
        for name in RESULT_FIELDS:
            value = getattr(self, name)
            data[name] = round(value, self._DECIMALS.get(name, 1)) if isinstance(value, float) else value
        return data


#: The engine's face fields the database keeps besides the box: the one list, read off the model.
RESULT_FIELDS = tuple(
    field.name
    for field in Face._meta.concrete_fields
    if field.name not in ("id", "prediction", "index", "x1", "y1", "x2", "y2")
)

_Boxed = TypeVar("_Boxed")


def in_reading_order(faces: Iterable[_Boxed]) -> list[_Boxed]:
    """Faces (anything with a `box`, x1, y1, x2, y2) as a person reads a group photo: rows from the top,
    each from the left. A face joins the row above when its centre is within half a face height of that
    row's (the engine gives largest first; the page numbers faces, and its list is easier to match with
    the boxes in this order)."""
    rows: list[dict] = []
    for face in sorted(faces, key=lambda face: face.box[1] + face.box[3]):
        x1, y1, x2, y2 = face.box
        centre, height = (y1 + y2) / 2, y2 - y1
        row = rows[-1] if rows else None
        if row is not None and centre - row["centre"] < 0.5 * max(row["height"], height):
            row["faces"].append(face)
            count = len(row["faces"])
            row["centre"] += (centre - row["centre"]) / count
            row["height"] += (height - row["height"]) / count
        else:
            rows.append({"centre": centre, "height": height, "faces": [face]})
    return [face for row in rows for face in sorted(row["faces"], key=lambda face: face.box[0])]
