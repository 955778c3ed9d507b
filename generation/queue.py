"""The fair queue: dispatch order, positions and waits, and claiming a job.

The database row is the truth for every job; a queue message (`tasks.nudge`) only wakes a
worker, which then claims whichever queued job of that model is fairest (`claim_next_job`).
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.db.models import (Avg, Count, DurationField, ExpressionWrapper, F, IntegerField, OuterRef, Subquery,
                              Window)
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from generation import diffusion, events  # batch_key loads torch on first use, in workers only (PEP 562)
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
    queued = queued_ids(job.model_id)
    if queued == [job.pk]:
        position = 1  # alone in the queue, the common case: no need for the fair order's window query
    else:
        order = list(fair_order(job.model_id).values_list("pk", flat=True))
        if job.pk not in order:
            return None, None
        position = order.index(job.pk) + 1
    ahead = position - 1 + (1 if Generation.objects.filter(model_id=job.model_id, status=Status.RUNNING).exists() else 0)
    # Nothing ahead (the common case on a quiet site): no wait, so no need to average recent jobs.
    return position, round(ahead * average_job_seconds(job.model_id), 1) if ahead else 0.0


def queued_ids(model_id: int, limit: int = 2) -> list[int]:
    """Up to `limit` queued jobs of the model, in no particular order: a cheap look before the fair
    order's window query, which a worker would otherwise run three times to start a job nobody
    else waits beside (measured through the site: ~2 ms each, on the path of every job)."""
    return list(Generation.objects.filter(model_id=model_id, status=Status.QUEUED).values_list("pk", flat=True)[:limit])


def announce_positions(model_id: int) -> None:
    if not queued_ids(model_id, limit=1):
        return
    queued = list(fair_order(model_id)[:MAX_POSITION_UPDATES])
    if not queued:
        return
    each = average_job_seconds(model_id)
    for index, job in enumerate(queued):
        events.publish(job, "generation.queued", position=index + 1, eta=round((index + 1) * each, 1))


def _claim(candidate: int, worker: str) -> bool:
    """The conditional update (queued → running): two workers, or one message delivered twice,
    never run the same job twice."""
    now = timezone.now()
    return bool(Generation.objects.filter(pk=candidate, status=Status.QUEUED, cancel_requested=False).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker,
        attempts=F("attempts") + 1, step=0, preview="",
    ))


def claim_next_job(worker: str, model_id: int | None = None) -> Generation | None:
    """Atomically move the fairest queued job to running for `worker`."""
    if model_id is not None:
        queued = queued_ids(model_id)
        if not queued:
            return None
        if len(queued) == 1 and _claim(queued[0], worker):  # the only one: it is the fairest
            return Generation.objects.select_related("model", "owner").get(pk=queued[0])
    for candidate in fair_order(model_id).values_list("pk", flat=True)[:20]:
        if _claim(candidate, worker):
            return Generation.objects.select_related("model", "owner").get(pk=candidate)
    return None


BATCH_POLL_SECONDS = 0.005  # how often the batch window looks for new companions
BATCH_SCAN = 200  # queued jobs of the model looked at per look, in fair order
BATCH_WINDOW_STRETCH = 5  # the longest wait for companions, in windows
BUSY_SECONDS = 10  # someone else submitted to the model this recently: companions may be on their way


def job_batch_key(params: dict) -> tuple | None:
    """The engine's batch key of a stored request (`diffusion.batch_key`); None: it runs alone."""
    try:
        return diffusion.batch_key(diffusion.GenerationRequest.from_dict(params))
    except Exception:  # a row the engine cannot read: it runs alone and fails there, with a reason
        return None


def others_submitted_recently(job: Generation) -> bool:
    """Whether someone other than the job's owner submitted to its model in the last `BUSY_SECONDS`."""
    since = timezone.now() - timedelta(seconds=BUSY_SECONDS)
    return Generation.objects.filter(model_id=job.model_id, created_at__gte=since).exclude(
        owner_id=job.owner_id).exists()


def claim_compatible_jobs(worker: str, first: Generation, limit: int, window_seconds: float) -> list[Generation]:
    """Claim up to `limit` more queued jobs that can share `first`'s batch (same model and
    `diffusion.batch_key`), in the fair queue's order, waiting at most `window_seconds` for them.

    Fairness holds across a batch because the companions are taken in `fair_order`: one person's
    eight queued jobs rank behind everyone else's first, so they fill a batch only where nobody
    else waits. Each companion is claimed by the same conditional update as a single job, so
    recovery treats a batch's jobs one by one (heartbeats, re-queueing).

    Each companion that arrives opens the window again (up to `BATCH_WINDOW_STRETCH` windows in
    all): people who submit "at once" reach the database over tens of milliseconds (measured
    through the site on 2 cores: eight simultaneous submissions were split 7 + 1 and 5 + 3 with a
    fixed 50 ms window), while a job nobody joins waits one window only. The window opens only while
    the model is busy (`others_submitted_recently`): one person's jobs one after another on a quiet
    site never wait for companions that cannot come (measured: the 50 ms window was 7% of the
    built-in model's default job)."""
    key = job_batch_key(first.params)
    if key is None or limit <= 0:
        return []
    if not others_submitted_recently(first):
        window_seconds = 0.0  # nobody else is about: take what is queued, but make a lone person wait for nobody
        if not queued_ids(first.model_id, limit=1):
            return []
    started = time.monotonic()
    deadline = started + window_seconds
    claimed: list[int] = []
    while True:
        for candidate, params in fair_order(first.model_id).values_list("pk", "params")[:BATCH_SCAN]:
            if len(claimed) >= limit:
                break
            if job_batch_key(params) == key and _claim(candidate, worker):
                claimed.append(candidate)
                deadline = min(time.monotonic() + window_seconds, started + BATCH_WINDOW_STRETCH * window_seconds)
        left = deadline - time.monotonic()
        if len(claimed) >= limit or left <= 0:
            break
        time.sleep(min(BATCH_POLL_SECONDS, left))
    jobs = Generation.objects.select_related("model", "owner").in_bulk(claimed)
    return [jobs[pk] for pk in claimed]

