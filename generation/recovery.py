"""Recovery: nothing is lost. Queued jobs whose message may be gone are nudged again; running
jobs whose worker stopped sending heartbeats are retried or failed with a reason.

`start_recovery_loop` runs `recover_jobs` in the web process: once at start (the in-memory
broker forgets its messages when the server stops), then every few seconds.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from generation import events
from generation.models import Generation
from generation.tasks import nudge
from generation.training_jobs import recover_trainings

logger = logging.getLogger(__name__)
Status = Generation.Status


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
        still_running = Generation.objects.filter(pk=job.pk, status=Status.RUNNING, worker=job.worker)
        if job.cancel_requested:
            if still_running.update(status=Status.CANCELLED, finished_at=now, preview=""):
                job.refresh_from_db()
                events.publish(job, "generation.cancelled")
            continue
        if job.attempts < settings.LDM_JOB_MAX_ATTEMPTS:
            if still_running.update(status=Status.QUEUED, worker="", step=0, preview=""):
                logger.warning("Job %s lost its worker %s; retrying (attempt %d done)", job.pk, job.worker,
                               job.attempts)
                job.refresh_from_db()
                nudge(job)
                report.retried += 1
        else:
            message = (f"The worker running this job stopped responding {job.attempts} times; "
                       "it was not retried again.")
            if still_running.update(
                status=Status.FAILED, finished_at=now, preview="", error_message=message,
                error_detail=f"heartbeat older than {settings.LDM_HEARTBEAT_TIMEOUT_SECONDS}s; last worker "
                             f"{job.worker}",
            ):
                job.refresh_from_db()
                events.publish(job, "generation.failed", message=message)
                report.failed += 1
    return report


class RecoveryLoop:
    """`recover_jobs` now and then every `interval` seconds, in a thread, until `stop()`."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="job-recovery", daemon=True)

    def _run(self):
        first = True
        while not self._stop.is_set():
            try:
                report = recover_jobs(on_startup=first)
                if report.renudged or report.retried or report.failed:
                    logger.info("Job recovery: %s", report)
                trainings = recover_trainings(on_startup=first)  # LoRA trainings: the same rules
                if any(trainings.values()):
                    logger.info("LoRA training recovery: %s", trainings)
                first = False
            except Exception:
                logger.exception("Job recovery failed; trying again later")
            finally:
                close_old_connections()
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.thread.join(timeout)


def start_recovery_loop(interval: float) -> RecoveryLoop:
    """Recover lost and stuck jobs now and then every `interval` seconds (web process)."""
    loop = RecoveryLoop(interval)
    loop.thread.start()
    return loop
