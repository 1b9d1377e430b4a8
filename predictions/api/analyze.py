"""`POST /analyze`, DeepFace's API for age and gender: the requests its clients send (JSON with `img` as
base64, with or without a `data:` prefix, or the older `img_path`; or a multipart file `img`) answered
in its shape. The photo goes through the same checks, allowance, queue and workers as any upload, and
stays in the sender's history; the request waits for its job to end."""

from __future__ import annotations

import base64
import binascii
import io
import re

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from PIL import Image
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from predictions import services
from predictions.api.throttling import charge_allowance
from predictions.api.waiting import prediction_wait
from predictions.models import Face, Prediction
from predictions.uploads import UploadRejected, check_image_upload

SUPPORTED_ACTIONS = ("age", "gender")
#: DeepFace's other analyses, which this model does not make.
UNSUPPORTED_ACTIONS = ("emotion", "race")
#: DeepFace's words for a photo without a face when `enforce_detection` is on (its default).
NO_FACE = (
    "Face could not be detected in the image. Please confirm that the picture is a face photo "
    "or consider to set enforce_detection param to False."
)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_EXTENSION_FOR_FORMAT = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "HEIF": "heic",
    "AVIF": "avif",
}


class AnalyzeError(ValueError):
    """The request cannot be analysed; the message says why (answered 400, as DeepFace does)."""


def _actions(value: object) -> list[str]:
    """DeepFace's `actions`: a list, or in a form a string such as '["age", "gender"]'. Absent: the
    analyses this server makes (DeepFace's default also names emotion and race)."""
    if value is None:
        return list(SUPPORTED_ACTIONS)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]  # a form field once: "age", or '["age", "gender"]' as DeepFace clients send it
    if isinstance(value, str):
        value = [part for part in re.sub(r"[\[\]()\"' ]", "", value).split(",") if part]
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value) or not value:
        raise AnalyzeError('actions must be a list of analyses, e.g. ["age", "gender"].')
    actions = [item.strip().lower() for item in value]
    unknown = [action for action in actions if action not in SUPPORTED_ACTIONS]
    if unknown:
        raise AnalyzeError(
            f"This server estimates age and gender only; it cannot do: {', '.join(unknown)}. "
            'Ask for actions ["age", "gender"].'
        )
    return actions


def _flag(name: str, value: object, default: bool) -> bool:
    """DeepFace's booleans: JSON true/false, or in a form the strings "true" and "false"."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() not in ("true", "false"):
        raise AnalyzeError(f"{name} must be true or false.")
    return str(value).lower() == "true"


def _decoded(text: str) -> bytes:
    """The image inside `img`: base64, with or without a `data:image/...;base64,` prefix. URLs and paths
    are refused: this server fetches nothing from the network and reads no files of its own."""
    text = text.strip()
    if _URL.match(text):
        raise AnalyzeError(
            "Image URLs are not accepted: this server fetches nothing from the network. Send the image "
            "itself, base64-encoded in img, or as a multipart file named img."
        )
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError):
        raise AnalyzeError(
            "img is not a base64-encoded image (file paths are not read: send the image itself)."
        ) from None


def _as_upload(data: bytes, name: str = "") -> SimpleUploadedFile:
    """The bytes as an upload named for their real format (what `check_image_upload` reads)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            extension = _EXTENSION_FOR_FORMAT.get(image.format or "", "")
    except Exception:  # not an image: `check_image_upload` says so in its words
        extension = ""
    stem = name.rsplit(".", 1)[0] if name else "analyze"
    return SimpleUploadedFile(f"{stem}.{extension or 'jpg'}", data)


def image_from_request(request: Request) -> UploadedFile:
    upload = request.FILES.get("img")
    if upload is not None:
        if not upload.name:
            raise AnalyzeError("No file uploaded for 'img'.")
        upload.seek(0)
        return _as_upload(upload.read(), upload.name)
    data = request.data
    img = data.get("img") or data.get("img_path") if hasattr(data, "get") else None
    if not img:
        raise AnalyzeError("'img' not found in the request: send it in JSON or as a multipart file.")
    if not isinstance(img, str):
        raise AnalyzeError("img must be one image, as a base64 string.")
    return _as_upload(_decoded(img))


def deepface_result(face: Face) -> dict:
    """One face in DeepFace's shape. Its eyes are the person's own, as DeepFace names them; None for a
    photo read whole as one face (as DeepFace gives when it finds no face)."""
    woman = face.gender_confidence if face.gender == Face.Gender.FEMALE else 1 - face.gender_confidence
    return {
        "age": int(round(face.age)),
        "dominant_gender": "Woman" if face.gender == Face.Gender.FEMALE else "Man",
        "gender": {"Woman": round(100 * woman, 4), "Man": round(100 * (1 - woman), 4)},
        "region": {
            "x": face.x1,
            "y": face.y1,
            "w": face.x2 - face.x1,
            "h": face.y2 - face.y1,
            "left_eye": face.left_eye,
            "right_eye": face.right_eye,
        },
        "face_confidence": round(face.detection_confidence, 4) if face.detected else 0.0,
        # Beyond DeepFace: the range this model gives its age, which DeepFace has not.
        "age_low": round(face.age_low, 1),
        "age_high": round(face.age_high, 1),
    }


_Region = inline_serializer(
    "Region",
    {
        "x": serializers.IntegerField(),
        "y": serializers.IntegerField(),
        "w": serializers.IntegerField(),
        "h": serializers.IntegerField(),
        "left_eye": serializers.ListField(child=serializers.IntegerField(), allow_null=True),
        "right_eye": serializers.ListField(child=serializers.IntegerField(), allow_null=True),
    },
)
_Result = inline_serializer(
    "AnalyzeResult",
    {
        "age": serializers.IntegerField(),
        "dominant_gender": serializers.ChoiceField(["Woman", "Man"]),
        "gender": inline_serializer(
            "GenderScores", {"Woman": serializers.FloatField(), "Man": serializers.FloatField()}
        ),
        "region": _Region,
        "face_confidence": serializers.FloatField(),
        "age_low": serializers.FloatField(),
        "age_high": serializers.FloatField(),
    },
)
_Answer = inline_serializer(
    "AnalyzeAnswer",
    {"results": _Result.__class__(many=True), "prediction": serializers.CharField(help_text="Its API URL.")},
)
_JsonRequest = inline_serializer(
    "AnalyzeRequest",
    {
        "img": serializers.CharField(help_text="The image, base64 (a data: URI prefix is allowed)."),
        "img_path": serializers.CharField(required=False, help_text="Older name of img."),
        "actions": serializers.ListField(
            child=serializers.ChoiceField(SUPPORTED_ACTIONS),
            min_length=1,
            required=False,
            help_text="What to estimate (DeepFace's emotion and race are refused, by name).",
        ),
        "enforce_detection": serializers.BooleanField(
            required=False, default=True, help_text="false: a photo without a face is read whole, as one."
        ),
    },
)
_MultipartRequest = inline_serializer(
    "AnalyzeUpload",
    {
        "img": serializers.FileField(),
        "actions": serializers.ListField(
            child=serializers.ChoiceField(SUPPORTED_ACTIONS),
            min_length=1,
            required=False,
            help_text='The field repeated, or once as DeepFace clients send it: ["age", "gender"].',
        ),
        "enforce_detection": serializers.ChoiceField(["true", "false"], required=False),
    },
)
_Error = inline_serializer("AnalyzeFailure", {"error": serializers.CharField()})
_Refused = inline_serializer("AnalyzeRefused", {"detail": serializers.CharField()})


class AnalyzeView(APIView):
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def handle_exception(self, exc: Exception) -> Response:
        """A body that cannot be read is answered as DeepFace answers a bad request: `{"error": ...}`."""
        response = super().handle_exception(exc)
        if (
            response.status_code in (400, 415)
            and isinstance(response.data, dict)
            and "detail" in response.data
        ):
            response.data = {"error": str(response.data["detail"])}
        return response

    @extend_schema(
        operation_id="analyze",
        request={"application/json": _JsonRequest, "multipart/form-data": _MultipartRequest},
        responses={
            200: _Answer,
            400: _Error,
            401: _Refused,
            413: _Error,
            415: _Error,
            429: _Refused,
            503: _Error,
        },
        description="DeepFace-compatible age and gender analysis; waits for the result.",
    )
    def post(self, request: Request) -> Response:
        if _too_long(request):
            return Response({"error": "The request is larger than the photo size limit."}, status=413)
        try:
            upload = image_from_request(request)
            data = request.data if hasattr(request.data, "get") else {}
            _actions(data.getlist("actions") or None if hasattr(data, "getlist") else data.get("actions"))
            enforce_detection = _flag("enforce_detection", data.get("enforce_detection"), True)
            checked = check_image_upload(upload)
        except (AnalyzeError, UploadRejected) as exc:
            return Response({"error": str(exc)}, status=400)
        charge_allowance(request, 1, checked.width * checked.height)
        with transaction.atomic():  # the job is sent once this commits, with as_one_face already set
            prediction = services.prediction_create(
                upload=upload, checked=checked, owner=request.user, session_key=""
            )
            if not enforce_detection:  # DeepFace then reads a photo without a face as one face
                Prediction.objects.filter(pk=prediction.pk).update(as_one_face=True)
        prediction = prediction_wait(prediction, seconds=settings.AGEGENDER_ANALYZE_WAIT_SECONDS)
        return _answer(request, prediction)


def _answer(request: Request, prediction: Prediction) -> Response:
    url = request.build_absolute_uri(reverse("api:prediction-detail", args=[prediction.id]))
    if not prediction.is_finished or prediction.can_try_again:
        still = "still waiting to be read" if not prediction.is_finished else "not read this time"
        return Response(
            {"error": f"The photo is {still}; its result will be at {url}.", "prediction": url},
            status=503,
            headers={"Retry-After": "10"},
        )
    if prediction.status == Prediction.Status.FAILED:
        return Response({"error": prediction.error, "prediction": url}, status=400)
    faces = list(prediction.faces.all())
    if not faces:
        return Response({"error": NO_FACE, "prediction": url}, status=400)
    return Response({"results": [deepface_result(face) for face in faces], "prediction": url})


def _too_long(request: Request) -> bool:
    """A JSON body is read whole into memory: refuse one longer than a photo at the limit, base64."""
    if request.content_type.startswith("multipart/"):
        return False  # files stream to disk; check_image_upload applies the limit
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > settings.AGEGENDER_MAX_UPLOAD_BYTES * 4 // 3 + 64 * 1024
