"""Dramatiq actors. They take ids, never objects, and set explicit limits."""

import dramatiq
from django.utils import timezone

from generation.models import WorkerProbe
from generation.workers import worker_identity


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=10_000)
def answer_worker_probe(probe_id: int) -> None:
    WorkerProbe.objects.filter(pk=probe_id, answered_at__isnull=True).update(
        answered_at=timezone.now(), answered_by=worker_identity()
    )
