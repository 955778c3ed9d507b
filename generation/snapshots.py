"""The current state of a job as one JSON-able dict (websocket snapshots, API, pages)."""

import time

from django.urls import reverse

from generation.models import Generation
from generation.outputs import image_summary
from generation.queue import queue_position

# States whose images a snapshot lists: a finished job's, and an interrupted one's (the step it reached).
WITH_IMAGES = (Generation.Status.SUCCEEDED, Generation.Status.CANCELLED)


def running_eta(job: Generation) -> float | None:
    """A running job's time left: the runner's smoothed estimate at its last progress update, less
    the time since (``metadata["live"]``); None before the first step."""
    live = job.metadata.get("live") if isinstance(job.metadata, dict) else None
    if not live or live.get("eta") is None:
        return None
    return round(max(0.0, live["eta"] - max(0.0, time.time() - live.get("at", time.time()))), 1)


def job_snapshot(job: Generation) -> dict:
    position, eta = queue_position(job)
    params = job.params
    running = job.status == Generation.Status.RUNNING
    if running:
        eta = running_eta(job)
    return {
        "type": "generation.snapshot",
        "job": job.pk,
        "seq": job.event_seq,
        "status": job.status,
        # A running job before its first step is loading its model (or preparing the run).
        "phase": "loading" if running and job.step == 0 else None,
        "step": job.step,
        "total": job.total_steps,
        "position": position,
        "eta": eta,
        "prompt": params.get("prompt", ""),
        "model": job.model.name,
        "num_images": params.get("num_images", 1),
        "created_at": job.created_at.isoformat(),
        "error": job.error_message or None,
        "timings": job.metadata.get("timings") if job.is_final else None,
        # The latest live preview (a data: URL) while the job runs, so that a client that
        # (re)connects shows the image at once instead of a blank until the next step's event.
        "preview": (job.preview or None) if running else None,
        "interrupted": bool(job.metadata.get("interrupted")),  # cancelled after a step: its images are partial
        "images": [image_summary(image) for image in job.images.all()] if job.status in WITH_IMAGES else [],
        "url": reverse("generation:detail", args=[job.pk]),
        "cancel_url": reverse("generation:cancel", args=[job.pk]),
        # Image to image: the mode, and the stored source picture (snapshots go to the owner and staff only).
        "mode": job.mode,
        "source_url": job.source_url("init") if job.init_image else None,
    }
