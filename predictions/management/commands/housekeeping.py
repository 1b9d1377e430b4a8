"""`python manage.py housekeeping`: what Celery beat runs hourly, by hand or from cron."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from predictions import services


class Command(BaseCommand):
    help = "Delete expired anonymous predictions (with their files) and expired sessions."

    def handle(self, *args: object, **options: object) -> None:
        done = services.housekeeping()
        self.stdout.write(f"Deleted {done['anonymous_predictions_deleted']} expired anonymous prediction(s).")
