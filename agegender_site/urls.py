from django.contrib import admin
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from predictions import views


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    return HttpResponsePermanentRedirect(static("agegender/favicon.svg"))  # its hashed name in production


urlpatterns = [
    path("admin/", admin.site.urls),
    # Browsers and crawlers ask for /favicon.ico whatever the pages' <link rel="icon"> says.
    path("favicon.ico", favicon),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/delete/", views.account_delete, name="account_delete"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("predictions.api.urls")),
    path("", include("predictions.urls")),
]
