"""The Celery app (the documented Django recipe). Tasks live in `worker/`, loaded only by workers."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agegender_site.settings")

app = Celery("agegender")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The web process enqueues by task name and never imports `worker` (which imports `ml`).
app.conf.imports = ["worker.tasks"]
