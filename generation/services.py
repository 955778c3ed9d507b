"""Generation logic shared by pages, the API, the A1111 API, commands and moderation.

The database row is the truth for every job; queue messages only nudge workers. What may be
submitted is decided in `admission`, the order jobs run in by `queue`, what happens to jobs
whose worker died by `recovery`.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from generation import admission, events, sources
from generation.models import DiffusionModel, Generation, LoraTraining, WorkerProbe
from generation.queue import queue_position
from generation.tasks import answer_worker_probe, nudge
from generation.training_jobs import cancel_training

Status = Generation.Status


# --- Submitting -------------------------------------------------------------------

def submit_generation(owner, raw: Mapping[str, Any], model: DiffusionModel | None = None) -> Generation:
    """Validate `raw`, store a queued job, and nudge a worker once the row is committed.

    Raises `admission.Refusal` (field-named) and stores nothing when the request is invalid,
    its prompt is blocked, or the person is over a limit. `raw["model"]` (a slug) picks the
    model unless `model` is given.

    Image to image: `raw` may also hold `init_image` and `mask` (base64 text, a data: URL, bytes
    or an uploaded file), `source_image` (the id of a gallery image `owner` may see, used as the
    init image) or `source_job` (the id of one of `owner`'s jobs, whose stored source is reused).
    Without `mode`, it is inferred: a mask -> inpaint, a source -> img2img, else txt2img. The
    pictures are checked before decoding (`sources`) and stored with the job, privately.
    """
    fields = dict(raw)
    slug = fields.pop("model", None)
    given = sources.pop_source_fields(fields)
    if model is None:
        model = admission.resolve_model(slug)
    # Every refused field at once: the pictures' and the request's.
    errors: dict[str, str] = {}
    request = picked = None
    try:
        picked = sources.read_sources(owner, given)
    except admission.Refusal as refusal:
        errors.update(refusal.errors)
    if fields.get("mode") in (None, ""):
        fields["mode"] = sources.infer_mode(given, picked)
    try:
        request = admission.validated_request(fields, model, owner)
    except admission.Refusal as refusal:
        errors = {**refusal.errors, **errors}
    if errors:
        raise admission.Refusal(errors)
    picked = sources.check_sources(request, picked, given)
    admission.check_prompt(owner, request.prompt, request.negative_prompt)
    files = sources.encoded(picked)  # outside the transaction: encoding takes a moment

    with transaction.atomic():
        # Serialise one person's submissions (row lock on PostgreSQL; SQLite's
        # IMMEDIATE transactions serialise all writers) so a burst cannot pass the limits.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        admission.check_job_limits(owner, request.num_images)
        job = Generation.objects.create(
            owner=owner, model=model, params=request.to_dict(), total_steps=request.steps,
            source_image=picked.source_image,
        )
        sources.store_sources(job, files)
        transaction.on_commit(lambda: announce_queued(job))
    return job


def announce_queued(job: Generation) -> None:
    """After commit: tell the owner where the job stands, then nudge a worker."""
    position, eta = queue_position(job)
    events.publish(job, "generation.queued", position=position, eta=eta)
    nudge(job)


# --- Cancelling ---------------------------------------------------------------------

def can_manage(user, job: Generation) -> bool:
    return user.is_authenticated and (user.is_staff or job.owner_id == user.pk)


def cancel_generation(job: Generation) -> Generation:
    """Queued jobs are cancelled at once; running ones stop at their next step."""
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
    """Cancel every queued or running job and LoRA training of `user` (used when an account is
    suspended)."""
    jobs = list(Generation.objects.filter(owner=user).active())
    for job in jobs:
        cancel_generation(job)
    trainings = list(LoraTraining.objects.filter(owner=user, status__in=LoraTraining.ACTIVE_STATUSES))
    for training in trainings:
        cancel_training(training)
    return len(jobs) + len(trainings)


# --- Workers ------------------------------------------------------------------------

def probe_workers(timeout: float = 10.0, poll_interval: float = 0.1) -> WorkerProbe:
    """Send a probe through the job queue and wait for a worker to answer it.

    Returns the probe; `answered_at` is None when no worker answered in time.
    """
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
