"""Celery side: the prediction task and the per-process model holder. Runs in worker processes only."""
