from django.contrib import admin
from django.urls import include, path

from predictions import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/delete/", views.account_delete, name="account_delete"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("predictions.api.urls")),
    path("", include("predictions.urls")),
]
