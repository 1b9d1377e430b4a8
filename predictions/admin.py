from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from predictions import services
from predictions.models import Face, Prediction


class FaceInline(admin.TabularInline):
    model = Face
    extra = 0
    can_delete = False
    fields = (
        "index",
        "x1",
        "y1",
        "x2",
        "y2",
        "age",
        "age_low",
        "age_high",
        "gender",
        "gender_confidence",
        "detection_confidence",
        "detected",
        "left_eye",
        "right_eye",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Prediction | None = None) -> bool:
        return False


def _file_link(file: object, view: str, obj: Prediction) -> str:
    if not file:
        return "-"
    return format_html('<a href="{}">{}</a>', reverse(view, args=[obj.pk]), file.name)


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail_tag",
        "original_name",
        "status",
        "owner_display",
        "face_count",
        "model_version",
        "created_at",
    )
    list_display_links = ("thumbnail_tag", "original_name")
    list_filter = ("status", "model_version", "as_one_face")
    search_fields = ("owner__username", "owner__email", "session_key")
    date_hierarchy = "created_at"
    readonly_fields = (
        "id",
        "thumbnail_tag",
        "image_link",
        "thumbnail_link",
        "display_link",
        "owner",
        "session_key",
        "original_name",
        "image_width",
        "image_height",
        "as_one_face",
        "status",
        "error",
        "retryable",
        "model_version",
        "attempts",
        "inference_ms",
        "created_at",
        "enqueued_at",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields
    inlines = [FaceInline]
    actions = ["rerun"]
    list_select_related = ("owner",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Prediction]:
        return super().get_queryset(request).annotate(face_count=Count("faces"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # predictions are made by uploading on the site

    @admin.display(description="Photo")
    def thumbnail_tag(self, obj: Prediction) -> str:
        url = reverse("predictions:thumbnail", args=[obj.pk])
        return format_html('<img src="{}" alt="" style="max-height:64px;max-width:96px">', url)

    # The stored files have no public URL: the links go to the views that check who may see them.
    @admin.display(description="Image")
    def image_link(self, obj: Prediction) -> str:
        return _file_link(obj.image, "predictions:original", obj)

    @admin.display(description="Thumbnail")
    def thumbnail_link(self, obj: Prediction) -> str:
        return _file_link(obj.thumbnail, "predictions:thumbnail", obj)

    @admin.display(description="Display copy")
    def display_link(self, obj: Prediction) -> str:
        return _file_link(obj.display, "predictions:image", obj)

    @admin.display(description="Owner", ordering="owner__username")
    def owner_display(self, obj: Prediction) -> str:
        return obj.owner.get_username() if obj.owner else "(anonymous session)"

    @admin.display(description="Faces", ordering="face_count")
    def face_count(self, obj: Prediction) -> int:
        return obj.face_count

    @admin.action(description="Re-run the model on the selected predictions")
    def rerun(self, request: HttpRequest, queryset: QuerySet[Prediction]) -> None:
        count = 0
        for prediction in queryset:
            services.prediction_rerun(prediction=prediction)
            count += 1
        self.message_user(request, f"Queued {count} prediction(s) again.", messages.SUCCESS)
