"""The API's URLs: `/api/v1/…`, the OpenAPI document and its browsable page, and DeepFace's `/analyze`
(at the root, where DeepFace's clients look for it). Included from the site's URLconf."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from predictions.api import account
from predictions.api.analyze import AnalyzeView
from predictions.api.views import PredictionViewSet, not_found

app_name = "api"

router = SimpleRouter(use_regex_path=False)  # path converters: the `uuid` lookup
router.register("predictions", PredictionViewSet, basename="prediction")

urlpatterns = [
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: the pages' CSP allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path("analyze", AnalyzeView.as_view(), name="analyze"),
    path("api/<path:rest>", not_found),
    path("accounts/tokens/", account.tokens, name="tokens"),
    path("accounts/tokens/<int:token_id>/revoke/", account.revoke, name="token_revoke"),
]
