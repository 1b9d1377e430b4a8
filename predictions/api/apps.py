from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "predictions.api"
    label = "api"
    verbose_name = "API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from predictions.api import schema  # noqa: F401  (registers the token scheme with drf-spectacular)
