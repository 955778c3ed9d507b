"""Generation logic shared by pages, the API, the A1111 API, commands and workers.

The database row is the truth for every job; queue messages only nudge workers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import (Avg, Count, DurationField, ExpressionWrapper, F, IntegerField, OuterRef, Subquery,
                              Window)
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from generation.diffusion.request import RequestValidationError, validate_request
from generation.models import DiffusionModel, Generation, WorkerProbe

logger = logging.getLogger(__name__)
Status = Generation.Status

FALLBACK_JOB_SECONDS = 10.0  # ETA guess before a model has finished any job
MAX_POSITION_UPDATES = 50  # queued jobs told their new position after each start


class SubmissionError(Exception):
    """A submission refused before anything was stored.

    `errors` maps field names to messages (`__all__` for the request as a whole);
    `status` is the HTTP status an API should answer with.
    """

    def __init__(self, errors: Mapping[str, str], status: int = 400):
        self.errors = dict(errors)
        self.status = status
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


# --- Submitting -------------------------------------------------------------------

def resolve_model(slug: str | None) -> DiffusionModel:
    if slug in (None, ""):
        model = DiffusionModel.default()
        if model is None:
            raise SubmissionError({"model": "no model is installed; staff can add one with `manage.py add_model`"})
        return model
    model = DiffusionModel.objects.filter(slug=slug, enabled=True).first()
    if model is None:
        choices = ", ".join(DiffusionModel.objects.filter(enabled=True).values_list("slug", flat=True))
        raise SubmissionError({"model": f"unknown model {slug!r}; available: {choices or 'none'}"})
    return model


def submit_generation(owner, raw: Mapping[str, Any], model: DiffusionModel | None = None) -> Generation:
    """Validate `raw`, store a queued job, and nudge a worker once the row is committed.

    Raises `SubmissionError` (field-named) and stores nothing when the request is invalid
    or the person is over their active-job cap.
    """
    fields = dict(raw)
    if model is None:
        model = resolve_model(fields.pop("model", None))
    else:
        fields.pop("model", None)
    try:
        request = validate_request(fields, model.limits())
    except RequestValidationError as error:
        raise SubmissionError(error.errors) from None
    from gallery.moderation import check_prompt  # late: gallery.moderation imports this module
    check_prompt(owner, request.prompt, request.negative_prompt)  # blocklist, suspended accounts: 4xx

    with transaction.atomic():
        # Serialise one person's submissions (row lock on PostgreSQL; SQLite's
        # IMMEDIATE transactions serialise all writers) so a burst cannot pass the cap.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        active = Generation.objects.filter(owner=owner).active().count()
        cap = settings.LDM_MAX_ACTIVE_JOBS
        if active >= cap and not owner.is_staff:
            raise SubmissionError(
                {"__all__": f"You already have {active} jobs queued or running; the limit is {cap}. "
                            "Wait for one to finish or cancel one."},
                status=429,
            )
        from ldmsite.api_throttling import check_daily_image_quota  # late: keeps DRF out of worker start-up
        check_daily_image_quota(owner, request.num_images)  # same transaction and lock: a burst cannot pass it
        job = Generation.objects.create(
            owner=owner, model=model, params=request.to_dict(), total_steps=request.steps,
        )
        transaction.on_commit(lambda: announce_queued(job))
    return job


def announce_queued(job: Generation) -> None:
    """After commit: tell the owner where the job stands, then nudge a worker."""
    from generation import events

    position, eta = queue_position(job)
    events.publish(job, "generation.queued", position=position, eta=eta)
    nudge(job)


def nudge(job: Generation) -> None:
    """Send a queue message for the job, on its model's queue."""
    import dramatiq

    from generation.tasks import run_generation

    Generation.objects.filter(pk=job.pk).update(nudged_at=timezone.now())
    queue = DiffusionModel.objects.values_list("queue_name", flat=True).get(pk=job.model_id) or "default"
    broker = dramatiq.get_broker()
    broker.declare_queue(queue)
    broker.enqueue(run_generation.message(job.pk).copy(queue_name=queue))


# --- The fair queue ---------------------------------------------------------------

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
    from generation import events

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
            attempts=F("attempts") + 1, step=0,
        )
        if claimed:
            return Generation.objects.select_related("model", "owner").get(pk=candidate)
    return None


# --- Cancelling ---------------------------------------------------------------------

def can_manage(user, job: Generation) -> bool:
    return user.is_authenticated and (user.is_staff or job.owner_id == user.pk)


def cancel_generation(job: Generation) -> Generation:
    """Queued jobs are cancelled at once; running ones stop at their next step."""
    from generation import events

    now = timezone.now()
    if Generation.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=now
    ):
        job.refresh_from_db()
        events.publish(job, "generation.cancelled")
        return job
    Generation.objects.filter(pk=job.pk, status=Status.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def cancel_active_jobs_of(user) -> int:
    """Cancel every queued or running job of `user` (used when an account is suspended)."""
    jobs = list(Generation.objects.filter(owner=user).active())
    for job in jobs:
        cancel_generation(job)
    return len(jobs)


# --- Recovery: nothing is lost -----------------------------------------------------

@dataclass
class RecoveryReport:
    renudged: int = 0
    retried: int = 0
    failed: int = 0


def recover_jobs(*, on_startup: bool = False) -> RecoveryReport:
    """Re-nudge queued jobs whose message may be lost; retry or fail jobs whose worker died.

    Safe to run from several processes at once: every change is a conditional update.
    On start-up every queued job is re-nudged (the in-memory broker forgets its
    messages when the server stops).
    """
    from generation import events

    report = RecoveryReport()
    now = timezone.now()
    queued = Generation.objects.filter(status=Status.QUEUED)
    if not on_startup:
        stale_nudge = now - timedelta(seconds=settings.LDM_REQUEUE_AFTER_SECONDS)
        queued = queued.filter(nudged_at__lt=stale_nudge) | queued.filter(nudged_at__isnull=True)
    for job in queued.order_by("created_at"):
        nudge(job)
        report.renudged += 1

    dead_before = now - timedelta(seconds=settings.LDM_HEARTBEAT_TIMEOUT_SECONDS)
    for job in Generation.objects.filter(status=Status.RUNNING, heartbeat_at__lt=dead_before):
        if job.cancel_requested:
            if Generation.objects.filter(pk=job.pk, status=Status.RUNNING, worker=job.worker).update(
                status=Status.CANCELLED, finished_at=now
            ):
                job.refresh_from_db()
                events.publish(job, "generation.cancelled")
            continue
        if job.attempts < settings.LDM_JOB_MAX_ATTEMPTS:
            if Generation.objects.filter(pk=job.pk, status=Status.RUNNING, worker=job.worker).update(
                status=Status.QUEUED, worker="", step=0
            ):
                logger.warning("Job %s lost its worker %s; retrying (attempt %d done)", job.pk, job.worker,
                               job.attempts)
                job.refresh_from_db()
                nudge(job)
                report.retried += 1
        else:
            message = (f"The worker running this job stopped responding {job.attempts} times; "
                       "it was not retried again.")
            if Generation.objects.filter(pk=job.pk, status=Status.RUNNING, worker=job.worker).update(
                status=Status.FAILED, finished_at=now, error_message=message,
                error_detail=f"heartbeat older than {settings.LDM_HEARTBEAT_TIMEOUT_SECONDS}s; last worker "
                             f"{job.worker}",
            ):
                job.refresh_from_db()
                events.publish(job, "generation.failed", message=message)
                report.failed += 1
    return report


# --- Workers ------------------------------------------------------------------------

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
