"""The photo's files as the pages show them, each behind the owner's check (404 for anything not yours):
the display copy or the photo, the original as stored, the thumbnail."""

from __future__ import annotations

import mimetypes
import uuid

from django.core.files.storage import FileSystemStorage
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_GET

from predictions.models import Prediction
from predictions.views import _get_prediction_or_404


def _serve_file(field: FieldFile) -> HttpResponse:
    """Stream a private local file, or redirect to a short-lived signed URL on S3."""
    if not field.name:
        raise Http404("No file.")
    storage = field.storage
    if not isinstance(storage, FileSystemStorage):
        return HttpResponseRedirect(storage.url(field.name))
    try:
        handle = storage.open(field.name, "rb")
    except FileNotFoundError:
        raise Http404("The file is gone.") from None
    content_type = mimetypes.guess_type(field.name)[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    response["Cache-Control"] = "private, max-age=300"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _preview_placeholder(prediction: Prediction) -> HttpResponse:
    """A grey picture the photo's shape, for a photo browsers cannot show until the worker has copied it
    as a JPEG (`Prediction.awaits_preview`); the pages load the photo again once it is read."""
    width, height = prediction.image_width or 4, prediction.image_height or 3
    text = "No preview" if prediction.status == Prediction.Status.FAILED else "Preview once read"
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><rect width="100%" height="100%" fill="#e4e8ee"/>'
        f'<text x="50%" y="50%" text-anchor="middle" dominant-baseline="middle" fill="#4a5260" '
        f'font-family="sans-serif" font-size="{max(width, height) // 16}">{text}</text></svg>'
    )
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
def image(request: HttpRequest, prediction_id: uuid.UUID) -> HttpResponse:
    """The photo as the pages show it: its display copy where it has one (a large photo or a HEIC, once
    read)."""
    prediction = _get_prediction_or_404(request, prediction_id)
    if prediction.awaits_preview:
        return _preview_placeholder(prediction)
    return _serve_file(prediction.display if prediction.display else prediction.image)


@require_GET
def original(request: HttpRequest, prediction_id: uuid.UUID) -> HttpResponse:
    """The photo exactly as stored: as uploaded, less where it was taken."""
    return _serve_file(_get_prediction_or_404(request, prediction_id).image)


@require_GET
def thumbnail(request: HttpRequest, prediction_id: uuid.UUID) -> HttpResponse:
    prediction = _get_prediction_or_404(request, prediction_id)
    if prediction.thumbnail:
        return _serve_file(prediction.thumbnail)
    if prediction.awaits_preview:
        return _preview_placeholder(prediction)
    return _serve_file(prediction.image)
