"""`python manage.py send_unsent`: the outbox's sweep, by hand (beat runs it, and every worker as it
starts): take back the jobs of dead workers, send the jobs nobody holds."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from predictions import outbox


class Command(BaseCommand):
    help = "Send again the jobs of queued predictions that nobody holds (never got, or lost, by the broker)."

    def handle(self, *args: object, **options: object) -> None:
        sent = outbox.sweep()
        self.stdout.write(f"Sent {sent} job{'s' if sent != 1 else ''} again.")
