"""Running one claimed job on a worker: heartbeats, engine callbacks, stored results."""

from __future__ import annotations

import logging
import threading
import time
import traceback

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from generation import diffusion, events  # the ML core loads torch when a job first needs it (PEP 562)
from gallery.models import Lora
from generation.models import Generation
from generation.outputs import image_summary, store_checked_image
from generation import progress as progress_module
from generation.progress import JobProgress
from generation.sources import load_sources
from generation.workers import RUNNING_JOBS, is_resident, load_for_job

logger = logging.getLogger(__name__)
Status = Generation.Status


class Heartbeat:
    """Records every few seconds that this worker is still running the job -- or the jobs of a
    batch, together, in one update (a job that left the batch is no longer running: the update
    skips it). ``rows``: the model of the rows (a LoRA training beats the same way)."""

    def __init__(self, job_ids: int | list[int], worker: str, rows=Generation):
        self.job_ids, self.worker, self.rows = ([job_ids] if isinstance(job_ids, int) else list(job_ids)), worker, rows
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.job_ids[0]}", daemon=True)

    def _beat(self):
        try:
            while not self._stop.wait(settings.LDM_HEARTBEAT_SECONDS):
                self.rows.objects.filter(pk__in=self.job_ids, status=Status.RUNNING, worker=self.worker).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            close_old_connections()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def people_message(error: BaseException) -> str:
    """What went wrong, in words a person can act on."""
    if isinstance(error, diffusion.ModelLoadError):
        return f"The model could not be loaded: {error}"
    if isinstance(error, diffusion.UnsupportedRequest):  # the engine's words are for the person
        return f"This model cannot run this request: {error}"
    # torch.OutOfMemoryError says "CUDA out of memory"; other devices' allocators say the same words.
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return "The worker ran out of memory. Try a smaller size or fewer images per job."
    return "Generation failed because of an internal error. Staff can see the details."


def finish(job: Generation, worker: str, **changes) -> bool:
    """Conditional final update: only the worker that owns the run may finish it.

    The live preview is cleared: it is there for clients that (re)connect while the job runs
    (snapshots show it only then). A finished job has its images instead -- a cancelled one the
    images of the step it reached -- or its error, and a data: URL kept on every finished row
    would only make the history heavier."""
    changes.setdefault("finished_at", timezone.now())
    changes.setdefault("preview", "")
    # The live estimate (``metadata["live"]``) is for running jobs' snapshots only.
    changes.setdefault("metadata", {key: value for key, value in job.metadata.items() if key != "live"})
    return bool(Generation.objects.filter(pk=job.pk, status=Status.RUNNING, worker=worker).update(**changes))


def store_images(job: Generation, result) -> list:
    """Store a result's images through the output check (`outputs.store_checked_image`)."""
    images = []
    for index, picture in enumerate(result.images):
        clip_score = result.clip_scores[index] if result.clip_scores else None
        images.append(store_checked_image(job, index, picture, result.metadata[index],  # output check
                                          result.parameters[index], clip_score))
    return images


def job_metadata(result) -> dict:
    """What the job row keeps of the engine's metadata: timings, and for an interrupted run the
    step it reached (the same in every image's record)."""
    first = result.metadata[0] if result.metadata else {}
    metadata = {"timings": first.get("timings", {})}
    metadata.update({key: first[key] for key in ("interrupted", "interrupted_at_step", "total_steps") if key in first})
    return metadata


def finish_cancelled(job: Generation, worker: str, cancelled) -> None:
    """A cancelled run keeps what it had (as A1111 returns the partial image on interrupt): after
    at least one step the engine hands over the decoded x0 estimate, stored like finished images
    and marked interrupted; the job stays cancelled. Cancelled before the first step: no images.

    No retry can reuse these images as a finished job's: a job whose cancel was requested is
    never queued again (`recovery`)."""
    images, changes = [], {}
    result = cancelled.result
    if result is not None and result.images:
        try:
            images = store_images(job, result)
        except Exception:  # the cancel still stands; what could not be stored is lost
            logger.exception("Job %s: the images of the interrupted run could not be stored", job.pk)
        changes = {"step": cancelled.step, "total_steps": cancelled.total, "metadata": job_metadata(result)}
    if finish(job, worker, status=Status.CANCELLED, **changes):
        if images:
            events.publish(job, "generation.cancelled", images=[image_summary(image) for image in images])
        else:
            events.publish(job, "generation.cancelled")


def lora_files(job: Generation) -> dict | None:
    """The files of the LoRAs the job's request names, by the name it gives them (the rule of
    admission: the owner's own by name, others' shared ones by owner/name, for the job's model).
    A name no longer usable (deleted, made private since) has no file: the engine refuses it,
    naming ``loras``."""
    names = [name for name, _ in job.request.loras]
    if not names:
        return None
    usable = Lora.objects.usable_by(job.owner, job.model, names)
    files = {}
    for name in names:
        lora = usable.get(name)
        if lora is None:
            continue
        try:
            files[name] = lora.file.path  # a local file: its hash is memoised, read only when first loaded
        except NotImplementedError:  # remote storage
            with lora.file.open("rb") as handle:
                files[name] = handle.read()
    return files


def execute_generation(job: Generation, worker: str) -> None:
    """Run a job this worker has claimed, from model load to stored images."""
    RUNNING_JOBS[threading.current_thread().name] = job.pk
    try:
        run_claimed_job(job, worker)
    finally:
        RUNNING_JOBS.pop(threading.current_thread().name, None)


def run_claimed_job(job: Generation, worker: str) -> None:
    with Heartbeat(job.pk, worker):
        events.publish(job, "generation.started", total=job.total_steps)
        try:
            # A state of its own: loading a model can take far longer than a step (first job of a
            # worker). A resident model takes no time to "load": no event for it (one statement
            # pair and an event-loop round trip fewer before the first step).
            if not is_resident(job.model):
                events.publish(job, "generation.loading", total=job.total_steps)
            load_started = time.monotonic()
            loaded = load_for_job(job.model)
            load_seconds = round(time.monotonic() - load_started, 2)

            request = job.request
            # Image to image: the stored pictures travel beside the request (the engine fits them to
            # width x height; outpaint and hires results are request.output_size).
            source = load_sources(job) if request.has_source else None
            if request.has_source and source is None:
                raise ValueError(f"job {job.pk} is {request.mode} but has no stored source picture")
            # Row updates, previews and channel sends happen on the publisher's thread, not between
            # steps (generation.progress); closed (last step out) before the job's final event.
            with JobProgress(job, load_seconds) as progress:
                result = diffusion.generate(loaded, request, source=source, on_progress=progress.update,
                                            should_cancel=progress.should_cancel, loras=lora_files(job),
                                            preview_size=None)  # latent resolution; enlarged smoothly there
            images = store_images(job, result)
        except diffusion.GenerationCancelled as cancelled:
            finish_cancelled(job, worker, cancelled)
            return
        except Exception as error:  # every failure becomes a definite, explained state
            fail_job(job, worker, error)
            return

        metadata = {**job_metadata(result), "load_seconds": load_seconds}
        if finish(job, worker, status=Status.SUCCEEDED, step=job.total_steps, metadata=metadata):
            events.publish(job, "generation.succeeded", images=[image_summary(image) for image in images])


# --- Batches: several people's compatible jobs as one engine run (issue 28) --------------------------

BATCH_PUBLISH_MAX_INTERVAL = 0.5  # seconds: a batch's jobs still show progress twice a second


class CancelRequests:
    """The cancel checks of a batch's jobs: one query per step for the whole batch, not one per job.

    The engine asks each job's check once per step, in order; a job that asks again means a new
    step, and the cancel flags of every job of the batch are read again."""

    def __init__(self, job_ids: list[int]):
        self.job_ids = job_ids
        self._asked: set[int] = set()
        self._requested: set[int] = set()

    def check(self, job_id: int) -> bool:
        if not self._asked or job_id in self._asked:
            self._requested = set(Generation.objects.filter(pk__in=self.job_ids, cancel_requested=True)
                                  .values_list("pk", flat=True))
            self._asked.clear()
        self._asked.add(job_id)
        return job_id in self._requested

    def for_job(self, job_id: int):
        return lambda: self.check(job_id)


def fail_job(job: Generation, worker: str, error: BaseException) -> None:
    """Record a job's failure: the person's words and the technical detail (for staff)."""
    logger.error("Job %s failed", job.pk, exc_info=error)
    message = people_message(error)
    detail = "".join(traceback.format_exception(error))[-10_000:]
    if finish(job, worker, status=Status.FAILED, error_message=message, error_detail=detail):
        events.publish(job, "generation.failed", message=message)


def conclude_job(job: Generation, worker: str, outcome, load_seconds: float) -> None:
    """A batch job's outcome becomes its final state: stored images, the cancellation (with what
    the run had) or the failure -- this job's alone, whatever its companions' were."""
    if isinstance(outcome, diffusion.GenerationCancelled):
        finish_cancelled(job, worker, outcome)
        return
    if isinstance(outcome, BaseException):
        fail_job(job, worker, outcome)
        return
    try:
        images = store_images(job, outcome)
    except Exception as error:
        fail_job(job, worker, error)
        return
    metadata = {**job_metadata(outcome), "load_seconds": load_seconds}
    if finish(job, worker, status=Status.SUCCEEDED, step=job.total_steps, metadata=metadata):
        events.publish(job, "generation.succeeded", images=[image_summary(image) for image in images])


def execute_generation_batch(jobs: list[Generation], worker: str) -> None:
    """Run jobs this worker has claimed together (`queue.claim_compatible_jobs`) as one batch."""
    thread = threading.current_thread().name
    for index, job in enumerate(jobs):
        RUNNING_JOBS[f"{thread}#{index}"] = job.pk
    try:
        run_claimed_batch(jobs, worker)
    finally:
        for index in range(len(jobs)):
            RUNNING_JOBS.pop(f"{thread}#{index}", None)


def run_claimed_batch(jobs: list[Generation], worker: str) -> None:
    """The batch's jobs heartbeat together; each has its own progress publisher, cancel check and
    outcome (`diffusion.generate_batch`: a job that fails or is cancelled leaves the others'
    images unchanged). A worker that dies mid-batch leaves every job's heartbeat to go stale, and
    recovery re-queues them one by one."""
    ids = [job.pk for job in jobs]
    with Heartbeat(ids, worker):
        resident = is_resident(jobs[0].model)
        for job in jobs:
            events.publish(job, "generation.started", total=job.total_steps)
            if not resident:
                events.publish(job, "generation.loading", total=job.total_steps)
        load_started = time.monotonic()
        try:
            loaded = load_for_job(jobs[0].model)
        except Exception as error:
            for job in jobs:
                fail_job(job, worker, error)
            return
        load_seconds = round(time.monotonic() - load_started, 2)
        cancels = CancelRequests(ids)
        # Each job of a batch publishes less often (a batch of n: n times the interval, at most
        # BATCH_PUBLISH_MAX_INTERVAL): the worker's row updates, preview encodings and channel sends
        # then stay near one job's, instead of competing n-fold with the batch for the cores.
        interval = min(progress_module.PUBLISH_INTERVAL_SECONDS * len(jobs), BATCH_PUBLISH_MAX_INTERVAL)
        progresses = [JobProgress(job, load_seconds, interval=interval) for job in jobs]
        try:
            outcomes = diffusion.generate_batch(
                loaded, [job.request for job in jobs], on_progress=[progress.update for progress in progresses],
                should_cancel=[cancels.for_job(job.pk) for job in jobs],
                preview_size=None)  # latent resolution; enlarged smoothly by the publisher
        finally:
            for progress in progresses:  # the last steps out before the final events
                progress.close()
        for job, outcome in zip(jobs, outcomes):
            conclude_job(job, worker, outcome, load_seconds)
