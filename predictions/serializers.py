"""The one JSON shape of a prediction and its faces: the API, the status endpoint the pages poll, and
the export all serialise through here. Face fields carry the engine's and the database's names
(`ml.Face.to_dict()`)."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from predictions import selectors
from predictions.models import RESULT_FIELDS, Face, Prediction


class RoundedFloatField(serializers.FloatField):
    def __init__(self, digits: int, **kwargs: object) -> None:
        self.digits = digits
        super().__init__(**kwargs)

    def to_representation(self, value: float) -> float:
        return round(float(value), self.digits)


def _eye(person: str, photo: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.IntegerField(),
        min_length=2,
        max_length=2,
        allow_null=True,
        read_only=True,
        help_text=f"The person's {person} eye (on the {photo} of the photo), x, y in pixels; null when "
        "not found (a photo read whole as one face).",
    )


class FaceSerializer(serializers.ModelSerializer):
    box = serializers.ListField(
        child=serializers.IntegerField(),
        min_length=4,
        max_length=4,
        read_only=True,
        help_text="x1, y1, x2, y2 in pixels of the upright photo.",
    )
    detection_confidence = RoundedFloatField(4, read_only=True)
    age = RoundedFloatField(1, read_only=True, help_text="Estimated age, years.")
    age_low = RoundedFloatField(1, read_only=True, help_text="Low end of the 80% range.")
    age_high = RoundedFloatField(1, read_only=True, help_text="High end of the 80% range.")
    gender_confidence = RoundedFloatField(4, read_only=True, help_text="Probability of `gender`.")
    left_eye = _eye("left", "right")
    right_eye = _eye("right", "left")

    class Meta:
        model = Face
        fields = ["box", *RESULT_FIELDS]  # the one field list, on the model
        read_only_fields = fields


class PredictionSerializer(serializers.ModelSerializer):
    """Context: `with_queue` (default True) adds `waiting_ahead` (a query, of the moment: not in an
    export); `request` makes `url` absolute."""

    url = serializers.SerializerMethodField(help_text="This prediction in the API.")
    status_display = serializers.CharField(source="get_status_display", read_only=True)
    finished = serializers.BooleanField(source="is_finished", read_only=True)
    face_count = serializers.SerializerMethodField()
    retryable = serializers.BooleanField(source="can_try_again", read_only=True)
    waiting_ahead = serializers.SerializerMethodField(
        help_text="While queued: photos the workers read before this one."
    )
    faces = serializers.SerializerMethodField(help_text="Once done: every face, in reading order.")

    class Meta:
        model = Prediction
        fields = [
            "id",
            "url",
            "original_name",
            "status",
            "status_display",
            "error",
            "finished",
            "model_version",
            "image_width",
            "image_height",
            "face_count",
            "as_one_face",
            "retryable",
            "waiting_ahead",
            "faces",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def _faces(self, prediction: Prediction) -> list[Face]:
        return list(prediction.faces.all()) if prediction.status == Prediction.Status.DONE else []

    def get_url(self, prediction: Prediction) -> str:
        path = reverse("api:prediction-detail", args=[prediction.id])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def get_face_count(self, prediction: Prediction) -> int:
        return len(self._faces(prediction))

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_waiting_ahead(self, prediction: Prediction) -> int | None:
        if not self.context.get("with_queue", True):
            return None  # dropped below; spares the query
        return selectors.prediction_waiting_ahead(prediction)

    @extend_schema_field(FaceSerializer(many=True))
    def get_faces(self, prediction: Prediction) -> list[dict]:
        return FaceSerializer(self._faces(prediction), many=True).data

    def to_representation(self, prediction: Prediction) -> dict:
        data = super().to_representation(prediction)
        if not self.context.get("with_queue", True):
            data.pop("waiting_ahead")
        return data


def prediction_data(prediction: Prediction, *, with_queue: bool = True, request: object = None) -> dict:
    """A prediction as JSON-ready data (for plain Django views too)."""
    return PredictionSerializer(prediction, context={"with_queue": with_queue, "request": request}).data
