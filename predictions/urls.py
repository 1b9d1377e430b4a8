from django.urls import path

from predictions import file_views, views

app_name = "predictions"

urlpatterns = [
    path("", views.upload, name="upload"),
    path("sample/", views.sample, name="sample"),
    path("healthz", views.healthz, name="healthz"),
    path("history/", views.history, name="history"),
    path("history/delete-all/", views.delete_all, name="delete_all"),
    path("history/export.json", views.export, name="export"),
    path("results/", views.results, name="results"),
    path("p/<uuid:prediction_id>/", views.detail, name="detail"),
    path("p/<uuid:prediction_id>/status/", views.status, name="status"),
    path("p/<uuid:prediction_id>/image/", file_views.image, name="image"),
    path("p/<uuid:prediction_id>/original/", file_views.original, name="original"),
    path("p/<uuid:prediction_id>/thumbnail/", file_views.thumbnail, name="thumbnail"),
    path("p/<uuid:prediction_id>/delete/", views.delete, name="delete"),
    path("p/<uuid:prediction_id>/as-one-face/", views.read_as_one_face, name="as_one_face"),
    path("p/<uuid:prediction_id>/try-again/", views.try_again, name="try_again"),
]
