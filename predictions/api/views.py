"""`/api/v1/predictions/`: send photos, read their results (waiting for them if asked), list, delete.
The same checks, limits, allowance and services as the site's upload form."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from django.utils.datastructures import MultiValueDict
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.exceptions import ParseError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from predictions import selectors, services
from predictions.api.throttling import charge_allowance
from predictions.api.waiting import MAX_WAIT_SECONDS, prediction_wait
from predictions.forms import UploadForm
from predictions.models import Prediction
from predictions.serializers import PredictionSerializer
from predictions.uploads import UploadRejected, check_image_upload


class PredictionPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request: Request) -> int:
        """As DRF's, but a `page_size` that is not a whole number from 1 is refused, not ignored."""
        value = request.query_params.get(self.page_size_query_param)
        if value is not None and not (value.isdigit() and 1 <= int(value) <= self.max_page_size):
            raise ParseError(f"page_size must be a whole number from 1 to {self.max_page_size}.")
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view: object) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["maximum"] = self.max_page_size
        return parameters


_Refusal = inline_serializer("Refusal", {"name": serializers.CharField(), "error": serializers.CharField()})
_UploadAnswer = inline_serializer(
    "UploadAnswer",
    {"predictions": PredictionSerializer(many=True), "refused": _Refusal.__class__(many=True)},
)
_UploadRefused = inline_serializer(
    "UploadRefused",
    {
        "errors": serializers.ListField(
            child=serializers.CharField(), required=False, help_text="The batch's."
        ),
        "refused": _Refusal.__class__(many=True, required=False, help_text="Each file's."),
        "detail": serializers.CharField(required=False, help_text="A request that could not be read."),
    },
)
_Upload = inline_serializer(
    "Upload",
    {
        "image": serializers.ListField(
            child=serializers.FileField(),
            min_length=1,
            max_length=settings.AGEGENDER_MAX_FILES_PER_UPLOAD,
            help_text="One or more photos (the field repeated).",
        )
    },
)
_Error = inline_serializer("Error", {"detail": serializers.CharField()})

_STATUS_FILTER = OpenApiParameter(
    "status", str, enum=[choice for choice, _ in Prediction.Status.choices], description="Only these."
)
_WAIT = OpenApiParameter(
    "wait",
    {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
    description=f"Seconds (at most {MAX_WAIT_SECONDS}) to wait for the job to end before answering.",
)


class PredictionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Your predictions: one per photo sent. Only your own are visible (another's answers 404)."""

    serializer_class = PredictionSerializer
    permission_classes = [IsAuthenticated]
    pagination_class = PredictionPagination
    parser_classes = [MultiPartParser]
    lookup_value_converter = "uuid"

    def get_queryset(self):
        predictions = selectors.prediction_list_for_viewer(user=self.request.user, session_key="")
        wanted = self.request.query_params.get("status")
        if wanted is None:
            return predictions
        if wanted not in Prediction.Status.values:
            raise ParseError(f"status must be one of {', '.join(Prediction.Status.values)}.")
        return predictions.filter(status=wanted)

    def get_object(self) -> Prediction:
        prediction = selectors.prediction_get_for_viewer(
            prediction_id=self.kwargs["pk"],
            user=self.request.user,
            session_key="",
            for_change=self.request.method == "DELETE",
        )
        if prediction is None:
            raise Http404("No such prediction.")
        return prediction

    @extend_schema(
        parameters=[_STATUS_FILTER],
        responses={200: PredictionSerializer(many=True), 400: _Error, 401: _Error, 404: _Error},
    )
    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[_WAIT],
        responses={200: PredictionSerializer, 400: _Error, 401: _Error, 404: _Error},
    )
    def retrieve(self, request: Request, *args: object, **kwargs: object) -> Response:
        prediction = self.get_object()
        wait = _wait_seconds(request.query_params.get("wait", "0"))
        if services.prediction_may_be_unsent(prediction):  # the broker was away: asking sends it again
            services.predictions_send_unsent(prediction_ids=[prediction.id])
        if wait and not prediction.is_finished:
            prediction = prediction_wait(prediction, seconds=wait)
        response = Response(self.get_serializer(prediction).data)
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(responses={204: None, 401: _Error, 404: _Error})
    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        services.prediction_delete(prediction=self.get_object())  # its files go once the delete commits
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request={"multipart/form-data": _Upload},
        responses={202: _UploadAnswer, 400: _UploadRefused, 401: _Error, 429: _Error},
    )
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        """Send one or more photos (field `image`, repeated). Accepted photos are queued (202); each one
        refused is named with its reason beside them. A batch over the limits is refused whole."""
        form = UploadForm(files=MultiValueDict({"images": request.FILES.getlist("image")}))
        if not form.is_valid():
            return Response({"errors": form.errors.get("images", []), "refused": []}, status=400)
        good, refused = [], []
        for upload in form.cleaned_data["images"]:
            try:
                good.append((upload, check_image_upload(upload)))
            except UploadRejected as exc:
                refused.append({"name": upload.name or "?", "error": str(exc)})
        if not good:
            return Response({"errors": [], "refused": refused}, status=400)
        charge_allowance(request, len(good), sum(checked.width * checked.height for _, checked in good))
        accepted = [
            services.prediction_create(upload=upload, checked=checked, owner=request.user, session_key="")
            for upload, checked in good
        ]
        data = {"predictions": self.get_serializer(accepted, many=True).data, "refused": refused}
        headers = {"Location": data["predictions"][0]["url"]} if len(accepted) == 1 else {}
        return Response(data, status=status.HTTP_202_ACCEPTED, headers=headers)


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@permission_classes([AllowAny])
@authentication_classes([])
def not_found(request: Request, rest: str = "") -> Response:
    """Any other path under /api/: a JSON 404, as programs expect from an API (not the site's page)."""
    return Response({"detail": "No such API endpoint."}, status=404)


def _wait_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT_SECONDS:  # also refuses nan and inf
        raise ParseError(f"wait must be a number of seconds from 0 to {MAX_WAIT_SECONDS}.")
    return seconds
