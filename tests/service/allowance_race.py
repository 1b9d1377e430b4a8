"""The child of `test_twenty_uploads_at_once_with_ten_left_let_exactly_ten_through`, in a module of its own:
a spawned process imports it before Django is set up, so it imports nothing of Django's at the top."""

from __future__ import annotations


def take_when_all_are_ready(redis_url: str, queue: str, photos_per_hour: int, barrier, results) -> None:
    """One upload's `take` in a process of its own (spawned: a fork of the test process, which runs
    threads, can hang), released together with the others by `barrier`."""
    import django

    django.setup()
    from django.conf import settings

    from predictions import ratelimit

    settings.REDIS_URL, settings.AGEGENDER_QUEUE = redis_url, queue
    settings.AGEGENDER_UPLOADS_PER_HOUR, settings.AGEGENDER_MEGAPIXELS_PER_HOUR = photos_per_hour, 0
    ratelimit._script(redis_url)  # connect and load the script before the start, not in the race
    barrier.wait()
    results.put(isinstance(ratelimit.take("198.51.100.20", photos=1, pixels=12_000_000), ratelimit.Allowed))
