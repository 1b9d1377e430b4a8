"""`python manage.py send_unsent`: send again the jobs the broker never got or lost (for cron, or by hand
after a Redis outage; workers also do it as they start)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from predictions import services


class Command(BaseCommand):
    help = "Send again the jobs of queued predictions that the broker never got, or lost."

    def handle(self, *args: object, **options: object) -> None:
        sent = services.predictions_send_unsent()
        self.stdout.write(f"Sent {sent} job{'s' if sent != 1 else ''} again.")
