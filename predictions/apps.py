from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    name = "predictions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from predictions import checks, signals  # noqa: F401  (registers the checks, connects the receivers)
