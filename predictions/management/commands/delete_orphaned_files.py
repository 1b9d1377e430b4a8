"""`python manage.py delete_orphaned_files [--dry-run] [--older-than-hours N]`: beat runs it daily."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta

from django.core.management.base import BaseCommand

from predictions import services


class Command(BaseCommand):
    help = "Delete stored photos, thumbnails and display copies that no prediction names any more."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
        parser.add_argument(
            "--older-than-hours",
            type=float,
            default=1.0,
            help="leave younger files alone (an upload on its way to its row); default 1",
        )

    def handle(self, *args: object, **options: object) -> None:
        older_than = timedelta(hours=float(options["older_than_hours"]))
        if options["dry_run"]:
            orphans = services.files_orphaned(older_than=older_than)
            for name in orphans:
                self.stdout.write(name)
            self.stdout.write(f"{len(orphans)} stored file(s) no prediction names (none deleted).")
            return
        deleted = services.files_delete_orphaned(older_than=older_than)
        self.stdout.write(f"Deleted {deleted} stored file(s) no prediction named.")
