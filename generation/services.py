"""Generation logic shared by pages, the API and commands."""

import time

from django.db import transaction

from generation.models import WorkerProbe


def probe_workers(timeout: float = 10.0, poll_interval: float = 0.1) -> WorkerProbe:
    """Send a probe through the job queue and wait for a worker to answer it.

    Returns the probe; `answered_at` is None when no worker answered in time.
    """
    from generation.tasks import answer_worker_probe

    with transaction.atomic():
        probe = WorkerProbe.objects.create()
        transaction.on_commit(lambda: answer_worker_probe.send(probe.pk))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe.refresh_from_db()
        if probe.answered_at is not None:
            break
        time.sleep(poll_interval)
    return probe
