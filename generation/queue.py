"""The fair queue: dispatch order, positions and waits, and claiming a job.

The database row is the truth for every job; a queue message (`tasks.nudge`) only wakes a
worker, which then claims whichever queued job of that model is fairest (`claim_next_job`).
"""

from __future__ import annotations

from django.db.models import (Avg, Count, DurationField, ExpressionWrapper, F, IntegerField, OuterRef, Subquery,
                              Window)
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from generation import events
from generation.models import Generation

Status = Generation.Status

FALLBACK_JOB_SECONDS = 10.0  # ETA guess before a model has finished any job
MAX_POSITION_UPDATES = 50  # queued jobs told their new position after each start


def fair_order(model_id: int | None = None):
    """Queued jobs in dispatch order: round-robin across people, oldest first within a person.

    A job's turn is its rank among its owner's queued jobs plus the number of jobs its
    owner already has running, so one person's 50 jobs interleave with everyone else's
    instead of starving them, also while one of them is running.
    """
    queued = Generation.objects.filter(status=Status.QUEUED)
    if model_id is not None:
        queued = queued.filter(model_id=model_id)
    running = (Generation.objects.filter(owner_id=OuterRef("owner_id"), status=Status.RUNNING)
               .order_by().values("owner_id").annotate(n=Count("pk")).values("n"))
    return queued.annotate(
        rank=Window(RowNumber(), partition_by=[F("owner_id")], order_by=[F("created_at").asc(), F("id").asc()]),
        running=Coalesce(Subquery(running, output_field=IntegerField()), 0),
    ).order_by(F("rank") + F("running"), "created_at", "id")


def average_job_seconds(model_id: int) -> float:
    recent = Generation.objects.filter(
        model_id=model_id, status=Status.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False
    ).order_by("-finished_at")[:20]
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    average = Generation.objects.filter(pk__in=list(recent.values_list("pk", flat=True))).aggregate(
        avg=Avg(duration)
    )["avg"]
    return average.total_seconds() if average else FALLBACK_JOB_SECONDS


def queue_position(job: Generation) -> tuple[int | None, float | None]:
    """1-based position among the model's queued jobs, and the estimated wait in seconds."""
    if job.status != Status.QUEUED:
        return None, None
    order = list(fair_order(job.model_id).values_list("pk", flat=True))
    if job.pk not in order:
        return None, None
    position = order.index(job.pk) + 1
    running = Generation.objects.filter(model_id=job.model_id, status=Status.RUNNING).count()
    return position, round((position - 1 + (1 if running else 0)) * average_job_seconds(job.model_id), 1)


def announce_positions(model_id: int) -> None:
    queued = list(fair_order(model_id)[:MAX_POSITION_UPDATES])
    if not queued:
        return
    each = average_job_seconds(model_id)
    for index, job in enumerate(queued):
        events.publish(job, "generation.queued", position=index + 1, eta=round((index + 1) * each, 1))


def claim_next_job(worker: str, model_id: int | None = None) -> Generation | None:
    """Atomically move the fairest queued job to running for `worker`.

    The conditional update (queued → running) means two workers, or one message
    delivered twice, never run the same job twice.
    """
    for candidate in fair_order(model_id).values_list("pk", flat=True)[:20]:
        now = timezone.now()
        claimed = Generation.objects.filter(pk=candidate, status=Status.QUEUED, cancel_requested=False).update(
            status=Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker,
            attempts=F("attempts") + 1, step=0, preview="",
        )
        if claimed:
            return Generation.objects.select_related("model", "owner").get(pk=candidate)
    return None

