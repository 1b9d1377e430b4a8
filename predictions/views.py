"""Thin views: parse the request, check access (404 for anything not yours), call a service or selector."""

from __future__ import annotations

import mimetypes
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from celery import current_app
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import redirect_to_login
from django.contrib.staticfiles import finders
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.paginator import Paginator
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from predictions import selectors, services
from predictions.forms import AccountDeleteForm, UploadForm
from predictions.health import service_health
from predictions.models import Prediction
from predictions.ratelimit import refuse_upload, seconds_to_next_hour
from predictions.serializers import prediction_data
from predictions.signals import VISITOR_KEY
from predictions.upload_handlers import unreadable_upload_reason
from predictions.uploads import allowed_extensions_text, check_image_upload, check_uploads

HISTORY_PAGE_SIZE = 12
MAX_RESULTS_PER_PAGE = 100


@dataclass(frozen=True)
class UploadOutcome:
    name: str
    prediction: Prediction | None = None
    error: str = ""


def _visitor_key(request: HttpRequest, *, create: bool = False) -> str:
    key = request.session.get(VISITOR_KEY, "")
    if not key and create:
        key = secrets.token_urlsafe(24)
        request.session[VISITOR_KEY] = key
    return key


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _get_prediction_or_404(
    request: HttpRequest, prediction_id: uuid.UUID, *, for_change: bool = False
) -> Prediction:
    prediction = selectors.prediction_get_for_viewer(
        prediction_id=prediction_id,
        user=request.user,
        session_key=_visitor_key(request),
        for_change=for_change,
    )
    if prediction is None:
        raise Http404("No such prediction.")
    return prediction


def status_payload(prediction: Prediction, *, with_queue: bool = True) -> dict:
    """The JSON status shape (`predictions.serializers`, shared with the API and the export). `with_queue`:
    how many photos are ahead of a waiting one (a query; of the moment, so not in an export)."""
    return prediction_data(prediction, with_queue=with_queue)


@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """Accepted photos are stored and queued, then the browser is sent to their results (post/redirect/get:
    reloading never uploads again); a file refused is named with its reason, and the others go on."""
    outcomes: list[UploadOutcome] = []
    if request.method == "POST":
        try:
            form = UploadForm(request.POST, request.FILES)
        except MultiPartParserError as exc:  # e.g. a file name far too long: say so, not a bare 400
            refused = [UploadOutcome(name="The upload", error=unreadable_upload_reason(exc))]
            if _wants_json(request):
                return _refusals_json(errors=[refused[0].error])
            return _upload_page(request, UploadForm(), refused, status=400)
        # A client with nothing left this hour is told before its photos are read (nothing counted).
        files = form.cleaned_data["images"] if form.is_valid() else []
        if files and (refusal := refuse_upload(request, 1, only_look=True)):
            return _over_allowance(request, form, refusal)
        if form.is_valid():
            owner, session_key = _uploader(request)
            checked_files = check_uploads(files)
            outcomes = [
                UploadOutcome(name=f.name or "?", error=c) for f, c in checked_files if isinstance(c, str)
            ]
            accepted_files = [(f, c) for f, c in checked_files if not isinstance(c, str)]
            pixels = sum(checked.width * checked.height for _, checked in accepted_files)
            if accepted_files and (refusal := refuse_upload(request, len(accepted_files), pixels)):
                return _over_allowance(request, form, refusal)  # only accepted photos are counted
            for upload_file, checked in accepted_files:
                prediction = services.prediction_create(
                    upload=upload_file, checked=checked, owner=owner, session_key=session_key
                )
                outcomes.append(UploadOutcome(name=upload_file.name or "?", prediction=prediction))
            accepted = [outcome.prediction for outcome in outcomes if outcome.prediction is not None]
            if accepted:
                for outcome in outcomes:
                    if outcome.error:
                        messages.error(request, f"{outcome.name}: {outcome.error}")
                if len(accepted) == 1:
                    location = reverse("predictions:detail", args=[accepted[0].id])
                else:
                    ids = ",".join(str(prediction.id) for prediction in accepted)
                    location = f"{reverse('predictions:results')}?{urlencode({'ids': ids})}"
                if _wants_json(request):  # the page's script uploads with progress, then goes there itself
                    return JsonResponse({"location": location})
                return redirect(location)
            form = UploadForm()
        elif _wants_json(request):
            return _refusals_json(errors=form.errors.get("images", []))
    else:
        form = UploadForm()
    if outcomes and _wants_json(request):  # every file was refused
        return _refusals_json(
            refused=[{"name": outcome.name, "error": outcome.error} for outcome in outcomes]
        )
    status = 400 if (form.errors or outcomes) else 200  # outcomes here: every file was refused
    return _upload_page(request, form, outcomes, status=status)


def _over_allowance(request: HttpRequest, form: UploadForm, refusal: str) -> HttpResponse:
    if _wants_json(request):
        response = _refusals_json(errors=[refusal], status=429)
    else:
        form.add_error("images", refusal)
        response = _upload_page(request, form, [], status=429)
    response["Retry-After"] = str(seconds_to_next_hour())
    return response


def _refusals_json(
    *, errors: Sequence[str] = (), refused: Sequence[dict] = (), status: int = 400
) -> JsonResponse:
    """Why nothing was uploaded, for the page's script: the batch's `errors`, each file's `refused`."""
    return JsonResponse({"errors": list(errors), "refused": list(refused)}, status=status)


def _uploader(request: HttpRequest) -> tuple[AbstractBaseUser | None, str]:
    """Who a new prediction belongs to: the signed-in user, else this browser session (created now)."""
    owner = request.user if request.user.is_authenticated else None
    return owner, "" if owner else _visitor_key(request, create=True)


#: The sample portrait offered to a visitor with no photo at hand: scikit-image's astronaut, Eileen
#: Collins photographed by NASA (public domain), shipped with the site's static files.
SAMPLE_PHOTO = "agegender/sample-astronaut.jpg"
SAMPLE_NAME = "sample – Eileen Collins, NASA.jpg"


@require_POST
def sample(request: HttpRequest) -> HttpResponse:
    """Read the sample portrait exactly as an upload of it would be (checks, storage, the queue)."""
    upload = SimpleUploadedFile(SAMPLE_NAME, Path(finders.find(SAMPLE_PHOTO)).read_bytes(), "image/jpeg")
    checked = check_image_upload(upload)
    if refusal := refuse_upload(request, 1, checked.width * checked.height):
        messages.error(request, refusal)
        return redirect("predictions:upload")
    owner, session_key = _uploader(request)
    prediction = services.prediction_create(
        upload=upload, checked=checked, owner=owner, session_key=session_key
    )
    return redirect("predictions:detail", prediction_id=prediction.id)


def _upload_page(
    request: HttpRequest, form: UploadForm, outcomes: list[UploadOutcome], *, status: int
) -> HttpResponse:
    context = {
        "form": form,
        "outcomes": outcomes,
        "allowed_extensions": allowed_extensions_text(),
        "max_upload_mb": settings.AGEGENDER_MAX_UPLOAD_BYTES // (1024 * 1024),
        "max_upload_bytes": settings.AGEGENDER_MAX_UPLOAD_BYTES,
        "max_files": settings.AGEGENDER_MAX_FILES_PER_UPLOAD,
    }
    return render(request, "predictions/upload.html", context, status=status)


def _face_boxes(payload: dict) -> list[dict]:
    """Faces with their boxes as percentages of the photo, so they scale with the displayed image."""
    width, height = payload["image_width"] or 1, payload["image_height"] or 1
    boxes = []
    for face in payload["faces"]:
        x1, y1, x2, y2 = face["box"]
        boxes.append(
            {
                **face,
                "left": round(100 * x1 / width, 3),
                "top": round(100 * y1 / height, 3),
                "width": round(100 * (x2 - x1) / width, 3),
                "height": round(100 * (y2 - y1) / height, 3),
                "gender_percent": round(100 * face["gender_confidence"]),
            }
        )
    return boxes


def _result_context(request: HttpRequest, prediction: Prediction, *, session_key: str) -> dict:
    """What `_result_body.html` shows of one photo, on its own page or as a card of an upload's."""
    payload = status_payload(prediction)
    return {
        "prediction": prediction,
        "boxes": _face_boxes(payload),
        "can_change": selectors.prediction_is_owned_by(
            prediction, user=request.user, session_key=session_key
        ),
        "waiting_ahead": payload["waiting_ahead"],
    }


@require_GET
def detail(request: HttpRequest, prediction_id: uuid.UUID) -> HttpResponse:
    prediction = _get_prediction_or_404(request, prediction_id)
    context = _result_context(request, prediction, session_key=_visitor_key(request))
    return render(request, "predictions/detail.html", context)


@require_GET
def results(request: HttpRequest) -> HttpResponse:
    """Several photos of one upload on one page, each updating by itself: `?ids=<uuid>,<uuid>,...`.
    Only the viewer's own photos are shown (staff: any); 404 when none of them is."""
    try:
        ids = [uuid.UUID(part.strip()) for part in request.GET.get("ids", "").split(",") if part.strip()]
    except ValueError:
        raise Http404("No such predictions.") from None
    if not ids or len(ids) > MAX_RESULTS_PER_PAGE:
        raise Http404("No such predictions.")
    session_key = _visitor_key(request)
    predictions = selectors.prediction_list_by_ids_for_viewer(
        prediction_ids=ids, user=request.user, session_key=session_key
    )
    if not predictions:
        raise Http404("No such predictions.")
    cards = [_result_context(request, prediction, session_key=session_key) for prediction in predictions]
    context = {
        "cards": cards,
        "all_finished": all(p.is_finished for p in predictions),
        "finished_count": sum(p.is_finished for p in predictions),
        "face_count": sum(len(card["boxes"]) for card in cards),
    }
    return render(request, "predictions/results.html", context)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers and monitoring: 200 while the site can take uploads (its database answers),
    503 when it cannot. A broker that does not answer makes it "degraded", not down: uploads are still
    taken and their jobs sent once it is back. Also the queue: photos waiting, and for how long."""
    checks = service_health(broker_url=current_app.conf.broker_url, queue=settings.AGEGENDER_QUEUE)
    response = JsonResponse(checks, status=200 if checks["database"] == "ok" else 503)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def status(request: HttpRequest, prediction_id: uuid.UUID) -> JsonResponse:
    prediction = _get_prediction_or_404(request, prediction_id)
    if services.prediction_may_be_unsent(prediction):  # the broker was away: polling sends it again
        services.predictions_send_unsent(prediction_ids=[prediction.id])
    response = JsonResponse(status_payload(prediction))
    response["Cache-Control"] = "no-store"
    return response


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


@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, prediction_id: uuid.UUID) -> HttpResponse:
    prediction = _get_prediction_or_404(request, prediction_id, for_change=True)
    if request.method == "POST":
        services.prediction_delete(prediction=prediction)
        messages.success(request, f"Deleted {prediction.original_name}.")
        return redirect("predictions:history")
    return render(request, "predictions/delete.html", {"prediction": prediction})


@require_POST
def read_as_one_face(request: HttpRequest, prediction_id: uuid.UUID) -> HttpResponse:
    """The sender says "it is a face": a photo in which no face was found is read again, all of it as one."""
    prediction = _get_prediction_or_404(request, prediction_id, for_change=True)
    try:
        services.prediction_read_as_one_face(prediction=prediction)
    except services.NotReadableAsOneFace as exc:  # e.g. the button pressed twice: say so on the page
        messages.info(request, str(exc))
    return _back_to_result(request, prediction)


@require_POST
def try_again(request: HttpRequest, prediction_id: uuid.UUID) -> HttpResponse:
    """A photo that failed through no fault of its own (the worker's, or time) is read again."""
    prediction = _get_prediction_or_404(request, prediction_id, for_change=True)
    try:
        services.prediction_try_again(prediction=prediction)
    except services.NotRetryable as exc:  # pressed twice, or a photo the engine cannot read
        messages.info(request, str(exc))
    return _back_to_result(request, prediction)


def _back_to_result(request: HttpRequest, prediction: Prediction) -> HttpResponse:
    """Back to the page a photo's button was pressed on (the photo's, or its upload's)."""
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(back)
    return redirect("predictions:detail", prediction_id=prediction.id)


@require_GET
def export(request: HttpRequest) -> JsonResponse:
    """All the viewer's predictions and their faces as one JSON file (the same fields as the status API),
    for them to keep or take elsewhere. The photos themselves are theirs already."""
    predictions = selectors.prediction_list_for_viewer(user=request.user, session_key=_visitor_key(request))
    records = [
        {"original_name": prediction.original_name, **status_payload(prediction, with_queue=False)}
        for prediction in predictions
    ]
    response = JsonResponse({"exported_at": timezone.now().isoformat(), "predictions": records})
    response["Content-Disposition"] = 'attachment; filename="age-gender-predictions.json"'
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "POST"])
def delete_all(request: HttpRequest) -> HttpResponse:
    """Delete every prediction of the viewer (signed in: all of theirs; a visitor: this session's)."""
    predictions = selectors.prediction_list_for_viewer(user=request.user, session_key=_visitor_key(request))
    if request.method == "POST":
        count = services.predictions_delete_all(predictions=predictions.order_by())
        messages.success(
            request, f"Deleted {count} photo{pluralize(count)} and {pluralize(count, 'its,their')} results."
        )
        return redirect("predictions:history")
    return render(request, "predictions/delete_all.html", {"count": predictions.count()})


@require_http_methods(["GET", "POST"])
def account_delete(request: HttpRequest) -> HttpResponse:
    """A signed-in user deletes their account and everything in it, after giving their password."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    form = AccountDeleteForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = request.user
        name = user.get_username()
        logout(request)
        count = services.account_delete(user=user)
        messages.success(request, f"Deleted the account {name} and its {count} photo{pluralize(count)}.")
        return redirect("predictions:upload")
    count = selectors.prediction_list_for_viewer(user=request.user, session_key="").count()
    return render(request, "registration/account_delete.html", {"form": form, "count": count})


@require_GET
def history(request: HttpRequest) -> HttpResponse:
    predictions = selectors.prediction_list_for_viewer(user=request.user, session_key=_visitor_key(request))
    page = Paginator(predictions, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "retention_days": settings.AGEGENDER_ANONYMOUS_RETENTION_DAYS}
    return render(request, "predictions/history.html", context)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}.")
        return redirect(reverse("predictions:history"))
    return render(request, "registration/signup.html", {"form": form})
