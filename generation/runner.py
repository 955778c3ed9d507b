"""Running one claimed job on a worker: heartbeats, engine callbacks, stored results."""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
import traceback

from django.conf import settings
from PIL import Image
from django.db import close_old_connections
from django.utils import timezone

from generation import diffusion, events  # the ML core loads torch when a job first needs it (PEP 562)
from gallery.models import Lora
from generation.models import Generation
from generation.outputs import image_summary, store_checked_image
from generation.sources import load_sources
from generation.workers import RUNNING_JOBS, load_for_job

logger = logging.getLogger(__name__)
Status = Generation.Status

PREVIEW_INTERVAL_SECONDS = 0.1  # at most ~10 previews per second per job
PREVIEW_SIZE = 256
ETA_SMOOTHING = 0.25  # weight of the newest step time in the moving average of step times


class StepTimer:
    """A smoothed estimate of the time left: an exponential moving average of step times.

    The engine's own estimate (elapsed / steps done) counts the first step's warm-up in every later
    estimate and follows each slow or fast step, so it jumps; this one starts from the first step's
    time (replaced by the second step's, when shorter: the first holds the warm-up) and moves by a
    quarter of each new step's difference. The model's load time is never in it
    (the runner starts the timer after loading)."""

    def __init__(self, started: float):
        self.last_time, self.last_step = started, 0
        self.first_step: int | None = None
        self.average: float | None = None

    def observe(self, step: int, total: int, now: float) -> float:
        steps = step - self.last_step
        if steps > 0:
            each = (now - self.last_time) / steps
            if self.average is None or self.last_step == self.first_step:
                # The first interval also holds the run's preparation (prompt encoding, warm-up):
                # it is only a first guess, replaced by the first plain step's time.
                self.average = each if self.average is None else min(self.average, each)
            else:
                self.average += ETA_SMOOTHING * (each - self.average)
            if self.first_step is None:
                self.first_step = step
            self.last_time, self.last_step = now, step
        return max(0.0, (self.average or 0.0) * (total - step))

class Heartbeat:
    """Records every few seconds that this worker is still running the job."""

    def __init__(self, job_id: int, worker: str):
        self.job_id, self.worker = job_id, worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def _beat(self):
        try:
            while not self._stop.wait(settings.LDM_HEARTBEAT_SECONDS):
                Generation.objects.filter(pk=self.job_id, status=Status.RUNNING, worker=self.worker).update(
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


def preview_data_url(picture, size: int = PREVIEW_SIZE) -> str:
    """The preview as a WebP data URL, its longer side scaled to `size` smoothly (bicubic): the
    engine's previews are at latent resolution (1/8 of the image), and a nearest-neighbour
    enlargement shows them as blocks, nothing like the image to come."""
    picture = picture.convert("RGB")
    scale = size / max(picture.size)
    if scale > 1:
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="WEBP", quality=70)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode()


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
            # A state of its own: loading a model can take far longer than a step (first job of a worker).
            events.publish(job, "generation.loading", total=job.total_steps)
            load_started = time.monotonic()
            loaded = load_for_job(job.model)
            load_seconds = round(time.monotonic() - load_started, 2)
            timer = StepTimer(time.monotonic())
            last_sent = 0.0

            def on_progress(progress):
                nonlocal last_sent
                now = time.monotonic()
                eta = timer.observe(progress.step, progress.total, now)
                final = progress.step >= progress.total
                if now - last_sent < PREVIEW_INTERVAL_SECONDS and not final:
                    return
                first = last_sent == 0.0
                last_sent = now
                changes = {"step": progress.step, "total_steps": progress.total, "heartbeat_at": timezone.now(),
                           "metadata": {"live": {"eta": round(eta, 1), "at": time.time(), "load_seconds": load_seconds}}}
                payload = {"step": progress.step, "total": progress.total,
                           "eta": round(eta, 1), "elapsed": round(progress.elapsed, 2)}
                if first:
                    payload["load_seconds"] = load_seconds
                if progress.preview is not None:
                    # Kept on the row in the same update, for clients that (re)connect or poll.
                    payload["preview"] = changes["preview"] = preview_data_url(progress.preview)
                Generation.objects.filter(pk=job.pk).update(**changes)
                events.publish(job, "generation.progress", **payload)

            def should_cancel() -> bool:
                return Generation.objects.filter(pk=job.pk, cancel_requested=True).exists()

            request = job.request
            # Image to image: the stored pictures travel beside the request (the engine fits them to
            # width x height; outpaint and hires results are request.output_size).
            source = load_sources(job) if request.has_source else None
            if request.has_source and source is None:
                raise ValueError(f"job {job.pk} is {request.mode} but has no stored source picture")
            result = diffusion.generate(loaded, request, source=source, on_progress=on_progress,
                                        should_cancel=should_cancel, loras=lora_files(job),
                                        preview_size=None)  # latent resolution; enlarged smoothly here
            images = store_images(job, result)
        except diffusion.GenerationCancelled as cancelled:
            finish_cancelled(job, worker, cancelled)
            return
        except Exception as error:  # every failure becomes a definite, explained state
            logger.exception("Job %s failed", job.pk)
            message = people_message(error)
            detail = "".join(traceback.format_exception(error))[-10_000:]
            if finish(job, worker, status=Status.FAILED, error_message=message, error_detail=detail):
                events.publish(job, "generation.failed", message=message)
            return

        metadata = {**job_metadata(result), "load_seconds": load_seconds}
        if finish(job, worker, status=Status.SUCCEEDED, step=job.total_steps, metadata=metadata):
            events.publish(job, "generation.succeeded", images=[image_summary(image) for image in images])

