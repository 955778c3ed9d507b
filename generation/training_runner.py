"""Running one claimed LoRA training on a worker: heartbeats, progress and samples, checkpoints
another worker can resume from, and the gallery `Lora` it makes.

The training itself is `generation.diffusion.training.lora.train_lora` (Django-free); this module
gives it a data folder, a checkpoint folder under the shared media root, and callbacks that write
the row and publish `training.*` events.
"""

from __future__ import annotations

import base64
import io
import logging
import time
import traceback
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image as PILImage

from gallery.models import Lora, lora_file_name
from generation import events
from generation.models import LoraTraining
from generation.runner import Heartbeat
from generation.training_queue import (TrainingDataError, checkpoint_dir, remove_work_dir, samples_url, work_dir,
                                       write_dataset)
from generation.workers import apply_torch_threads, resolve_source

logger = logging.getLogger(__name__)
Status = LoraTraining.Status

PROGRESS_INTERVAL_SECONDS = 0.2  # at most ~5 progress events (and row updates) per second
CANCEL_CHECK_SECONDS = 0.25
MAX_LOSS_POINTS = 400  # the loss curve kept on the row: pairs of points averaged beyond this
SAMPLE_STEPS = 8  # denoising steps of each sample image: a glimpse, not a finished picture
SAMPLE_COUNT = 4


def checkpoint_every(steps: int) -> int:
    """Checkpoints every 50 steps (the core's default: ~3.5 s of the built-in model's training on 2
    cores), more often for short runs so that a run killed midway still resumes past its start."""
    return max(1, min(50, steps // 4))


def sample_every(steps: int) -> int:
    """A sample grid about ten times per run (and at the end)."""
    return max(1, steps // 10)


def downsampled(points: list[list[float]], limit: int = MAX_LOSS_POINTS) -> list[list[float]]:
    """[[step, loss], ...] kept under `limit` by averaging neighbouring pairs (the curve's shape
    survives; a 20 000-step run stays a small row)."""
    while len(points) > limit:
        merged = [[points[i + 1][0], round((points[i][1] + points[i + 1][1]) / 2, 6)]
                  for i in range(0, len(points) - 1, 2)]
        if len(points) % 2:
            merged.append(points[-1])
        points = merged
    return points


def sample_grid(pictures: list) -> PILImage.Image:
    """The sample images side by side in a 2-column grid."""
    pictures = [picture.convert("RGB") for picture in pictures[:SAMPLE_COUNT]]
    width, height = pictures[0].size
    columns = min(2, len(pictures))
    rows = (len(pictures) + columns - 1) // columns
    grid = PILImage.new("RGB", (columns * width, rows * height), "white")
    for index, picture in enumerate(pictures):
        grid.paste(picture.resize((width, height)), ((index % columns) * width, (index // columns) * height))
    return grid


def data_url(picture: PILImage.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def people_message(error: BaseException) -> str:
    if isinstance(error, TrainingDataError):
        return f"The training images cannot be used: {error}"
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return "The worker ran out of memory. Try a smaller batch size or rank."
    return "Training failed because of an internal error. Staff can see the details."


def finish(training: LoraTraining, worker: str, **changes) -> bool:
    """Conditional final update: only the worker that owns the run may finish it."""
    changes.setdefault("finished_at", timezone.now())
    changes.setdefault("eta_seconds", None)
    return bool(LoraTraining.objects.filter(pk=training.pk, status=Status.RUNNING, worker=worker).update(**changes))


def free_lora_name(training: LoraTraining) -> str:
    """The name asked for, or (if the owner made a LoRA of that name while this one trained) the
    first of name-2, name-3, ... that is free."""
    taken = set(Lora.objects.filter(owner_id=training.owner_id, name__startswith=training.name)
                .values_list("name", flat=True))
    name, number = training.name, 1
    while name in taken:
        number += 1
        suffix = f"-{number}"
        name = training.name[:60 - len(suffix)] + suffix
    return name


def store_lora(training: LoraTraining, path: Path) -> Lora:
    """The trained file as the owner's (private) gallery LoRA, with its hash and its training."""
    from generation.diffusion.lora import read_lora  # loads torch: only on a worker

    data = path.read_bytes()
    lora_file = read_lora(data)
    state = lora_file.state_dict
    downs = [key for key in state if key.endswith((".lora_down.weight", ".lora.down.weight", ".lora_A.weight"))]
    stored = default_storage.save(lora_file_name(), ContentFile(data))
    params = {"training_id": training.pk, "rank": training.rank, "steps": training.steps,
              "learning_rate": training.learning_rate, "batch_size": training.batch_size, "seed": training.seed,
              "trigger": training.trigger, "images": training.image_count,
              "source": "album" if training.album_id else "zip", "album_id": training.album_id,
              "final_loss": training.losses[-1][1] if training.losses else None}
    for _ in range(3):  # a name taken between the check and the insert: take the next free one
        try:
            with transaction.atomic():
                return Lora.objects.create(
                    owner_id=training.owner_id, name=free_lora_name(training), base_model_id=training.base_model_id,
                    trigger_words=training.trigger, file=stored, file_hash=lora_file.hash, file_size=len(data),
                    key_format=lora_file.format, rank=training.rank, alpha=float(training.rank),
                    layer_count=len(downs), training=params,
                    description=f"Trained here on {training.image_count} images ({training.steps} steps).")
        except IntegrityError:
            continue
        except BaseException:
            default_storage.delete(stored)
            raise
    default_storage.delete(stored)
    raise RuntimeError("no free LoRA name")


def execute_training(training: LoraTraining, worker: str) -> None:
    """Run a training this worker has claimed, from its images to a stored LoRA."""
    from generation.diffusion.training.lora import train_lora  # loads torch: only on a worker

    with Heartbeat(training.pk, worker, rows=LoraTraining):
        events.publish_training(training, "training.started", attempt=training.attempts, total=training.steps)
        try:
            apply_torch_threads()
            directory = Path(resolve_source(training.base_model.source))
            count = write_dataset(training, work_dir(training.pk) / "data")
            points: list[list[float]] = list(training.losses or [])
            state = {"last_sent": 0.0, "last_cancel_check": 0.0, "cancel": False, "first": True, "new": []}

            def on_progress(step, total, loss, eta, samples):
                now = time.monotonic()
                changes = {}
                if state["first"]:  # where this attempt started: 0, or the checkpoint it resumed from
                    state["first"] = False
                    start = step - 1
                    points[:] = [point for point in points if point[0] <= start]
                    changes["start_step"] = start
                point = [step, round(float(loss), 6)]
                points.append(point)
                state["new"].append(point)
                final = step >= total
                if samples:
                    store_samples(training, step, samples)
                if now - state["last_sent"] < PROGRESS_INTERVAL_SECONDS and not final and not changes:
                    return
                state["last_sent"] = now
                kept = downsampled(points)
                points[:] = kept
                changes.update(step=step, total_steps=total, losses=kept, eta_seconds=round(eta, 1),
                               heartbeat_at=timezone.now())
                LoraTraining.objects.filter(pk=training.pk, status=Status.RUNNING, worker=worker).update(**changes)
                events.publish_training(training, "training.progress", step=step, total=total,
                                        loss=point[1], eta=round(eta, 1), points=state["new"],
                                        start_step=changes.get("start_step"))
                state["new"] = []

            def should_cancel() -> bool:
                now = time.monotonic()
                if now - state["last_cancel_check"] >= CANCEL_CHECK_SECONDS:
                    state["last_cancel_check"] = now
                    state["cancel"] = LoraTraining.objects.filter(pk=training.pk, cancel_requested=True).exists()
                return state["cancel"]

            LoraTraining.objects.filter(pk=training.pk).update(image_count=count)
            training.image_count = count
            result = train_lora(
                str(directory), work_dir(training.pk) / "data", trigger=training.trigger,
                output=work_dir(training.pk) / "lora.safetensors", rank=training.rank, steps=training.steps,
                learning_rate=training.learning_rate, batch_size=training.batch_size, seed=training.seed,
                checkpoint_dir=checkpoint_dir(training.pk), checkpoint_every=checkpoint_every(training.steps),
                resume=True, on_progress=on_progress, sample_every=training.sample_every,
                sample_steps=SAMPLE_STEPS, should_cancel=should_cancel)
            if result.cancelled:
                if finish(training, worker, status=Status.CANCELLED, step=result.steps,
                          losses=downsampled(points)):
                    events.publish_training(training, "training.cancelled", step=result.steps)
                remove_work_dir(training.pk)
                return
            training.losses = points
            lora = store_lora(training, result.path)
        except Exception as error:  # every failure becomes a definite, explained state
            logger.exception("LoRA training %s failed", training.pk)
            message = people_message(error)
            detail = "".join(traceback.format_exception(error))[-10_000:]
            if finish(training, worker, status=Status.FAILED, error_message=message, error_detail=detail):
                events.publish_training(training, "training.failed", message=message)
            remove_work_dir(training.pk)
            return
        if finish(training, worker, status=Status.SUCCEEDED, step=training.steps, lora=lora):
            events.publish_training(training, "training.succeeded", lora={
                "id": lora.pk, "name": lora.name, "url": lora.get_absolute_url(),
                "prompt_tag": f"<lora:{lora.name}:1>", "hash": lora.short_hash})
        else:  # cancelled or taken over meanwhile: the LoRA is not this run's to keep
            lora.delete()
        remove_work_dir(training.pk)


def store_samples(training: LoraTraining, step: int, samples: list) -> None:
    """Keep the newest sample grid as a private file on the row, and send it as a data: URL."""
    grid = sample_grid(samples)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    name = default_storage.save(f"trainings/samples/{training.pk}/step-{step:07d}.png", ContentFile(buffer.getvalue()))
    old = LoraTraining.objects.values_list("samples", flat=True).get(pk=training.pk) or []
    LoraTraining.objects.filter(pk=training.pk).update(samples=[name], samples_step=step)
    for stale in old:
        if stale != name:
            default_storage.delete(stale)
    training.samples, training.samples_step = [name], step
    events.publish_training(training, "training.samples", step=step, image=data_url(grid),
                            url=samples_url(training))
