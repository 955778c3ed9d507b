"""LoRA trainings as jobs: what may be submitted (every refused field named at once), the
per-person cap, cancelling, and recovery of trainings whose worker died.

Shared by the pages and the REST API. A training runs on its own queue (`workers.TRAINING_QUEUE`)
in the fair order of `training_queue`, with a generation job's guarantees: the row is the truth,
a claim is a conditional update, a heartbeat shows the worker lives, and a training whose worker
died resumes on another worker from its last checkpoint (`recover_trainings`).
"""

from __future__ import annotations

import logging
import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from gallery.models import LORA_NAME_PATTERN, Album, Lora
from generation import events
from generation.admission import Refusal, resolve_model
from generation.models import LoraTraining
from generation.tasks import nudge_training
from generation.training_queue import (MAX_ZIP_BYTES, TrainingDataError, queue_position, read_zip,
                                       remove_work_dir)
from generation.training_runner import sample_every
from generation.workers import resolve_source

logger = logging.getLogger(__name__)
Status = LoraTraining.Status

# The training core's defaults, measured on the built-in model (generation/diffusion/training/lora.py:
# a plus sign learnt from 30 images in 2 min 20 s on 2 CPU cores). Repeated here because importing the
# core loads torch, which the web process does not need; a test keeps the two equal.
DEFAULT_RANK = 8
DEFAULT_STEPS = 2000
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_BATCH_SIZE = 8
LIMITS = {"rank": (1, 128), "steps": (1, 20_000), "batch_size": (1, 64), "seed": (0, 2**32 - 1)}
MAX_LEARNING_RATE = 0.1
MAX_TRIGGER_LENGTH = 100
ACTIVE_TRAININGS_RETRY_SECONDS = 60


# --- Submitting ---------------------------------------------------------------------------------

def _whole(errors: dict, fields: Mapping, key: str, default: int) -> int | None:
    value = fields.get(key)
    if value in (None, ""):
        return default
    low, high = LIMITS[key]
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        errors[key] = f"must be a whole number from {low} to {high}"
        return None
    return number


def _learning_rate(errors: dict, fields: Mapping) -> float | None:
    value = fields.get("learning_rate")
    if value in (None, ""):
        return DEFAULT_LEARNING_RATE
    try:
        rate = float(str(value).strip()) if not isinstance(value, bool) else math.nan
    except ValueError:
        rate = math.nan
    if not (0 < rate <= MAX_LEARNING_RATE):  # NaN fails too
        errors["learning_rate"] = f"must be a number above 0 and at most {MAX_LEARNING_RATE:g} (e.g. 1e-3)"
        return None
    return rate


def _base_model(errors: dict, value):
    try:
        model = resolve_model(value)
    except Refusal as refusal:
        errors["base_model"] = refusal.errors.get("model", "unknown model")
        return None
    if not (Path(resolve_source(model.source)) / "unet").is_dir():
        errors["base_model"] = (f"model {model.slug!r} is not a local diffusers directory, so it cannot be "
                                "trained on here")
        return None
    return model


def _album(errors: dict, owner, value):
    try:
        album_id = int(str(value).strip()) if not isinstance(value, bool) else 0
    except ValueError:
        album_id = 0
    if not 0 < album_id < 10**18:  # a database integer, whatever the client sent
        errors["album"] = "must be the id of one of your albums"
        return None
    album = Album.objects.filter(pk=album_id, owner=owner).first()
    if album is None:
        errors["album"] = "must be one of your albums"
        return None
    if not album.items.exists():
        errors["album"] = "has no images; add at least one"
        return None
    return album


def _upload(errors: dict, upload) -> int | None:
    """The number of images in an uploaded zip, checked before it is stored."""
    if not isinstance(upload, UploadedFile):
        errors["images"] = "must be a zip file of images with same-named .txt captions"
        return None
    if upload.size > MAX_ZIP_BYTES:
        errors["images"] = f"is larger than {MAX_ZIP_BYTES // 2**20} MiB"
        return None
    try:
        upload.seek(0)
        count = len(read_zip(upload))
    except TrainingDataError as error:
        errors["images"] = str(error)
        return None
    finally:
        upload.seek(0)
    return count


def validated_training(owner, raw: Mapping[str, Any], upload=None) -> dict:
    """The fields of a training, or a `Refusal` naming every refused field. Images come from one
    of your albums (``album``: its images with their prompts as captions) or a zip (``images``)."""
    fields = dict(raw)
    errors: dict[str, str] = {}
    cleaned: dict[str, Any] = {}

    name = fields.get("name")
    name = name.strip() if isinstance(name, str) else ""
    if not re.match(LORA_NAME_PATTERN, name):
        errors["name"] = ("must be 1 to 60 letters, digits, _ . or - (starting with a letter or digit), "
                          "as written in <lora:name:weight>")
    elif Lora.objects.filter(owner=owner, name=name).exists():
        errors["name"] = f"you already have a LoRA named {name!r}"
    elif LoraTraining.objects.filter(owner=owner, name=name).active().exists():
        errors["name"] = f"a training of yours is already making a LoRA named {name!r}"
    cleaned["name"] = name

    trigger = fields.get("trigger")
    trigger = " ".join(trigger.split()) if isinstance(trigger, str) else ""
    if not trigger or len(trigger) > MAX_TRIGGER_LENGTH or any(c in trigger for c in "<>:"):
        errors["trigger"] = (f"must be 1 to {MAX_TRIGGER_LENGTH} characters without < > or :, the word(s) a "
                             "prompt uses to call up what the LoRA learns")
    cleaned["trigger"] = trigger

    cleaned["base_model"] = _base_model(errors, fields.get("base_model"))
    cleaned["rank"] = _whole(errors, fields, "rank", DEFAULT_RANK)
    cleaned["steps"] = _whole(errors, fields, "steps", DEFAULT_STEPS)
    cleaned["batch_size"] = _whole(errors, fields, "batch_size", DEFAULT_BATCH_SIZE)
    cleaned["seed"] = _whole(errors, fields, "seed", 0)
    cleaned["learning_rate"] = _learning_rate(errors, fields)

    album_value = fields.get("album")
    cleaned["album"], cleaned["image_count"] = None, 0
    if album_value not in (None, "") and upload is not None:
        errors["images"] = "send either an album or a zip of images, not both"
    elif album_value not in (None, ""):
        album = cleaned["album"] = _album(errors, owner, album_value)
        cleaned["image_count"] = album.items.count() if album else 0
    elif upload is not None:
        cleaned["image_count"] = _upload(errors, upload) or 0
    else:
        errors["album"] = "choose one of your albums, or send a zip of images as images"
    if errors:
        raise Refusal(errors)
    cleaned["sample_every"] = sample_every(cleaned["steps"])
    return cleaned


def check_training_limits(owner) -> None:
    """Refuse a training over `owner`'s cap of active trainings (staff are exempt). Call it inside the
    submission's transaction after the person's row is locked, so a burst cannot pass the cap."""
    if owner.is_staff:
        return
    active = LoraTraining.objects.filter(owner=owner).active().count()
    cap = settings.LDM_MAX_ACTIVE_TRAININGS
    if active >= cap:
        raise Refusal({"__all__": f"You already have {active} LoRA training(s) queued or running; the limit is "
                                  f"{cap}. Wait for one to finish or cancel one."},
                      status=429, limit="active_trainings", retry_after=ACTIVE_TRAININGS_RETRY_SECONDS)


def submit_training(owner, raw: Mapping[str, Any], upload=None) -> LoraTraining:
    """Validate, store a queued training (and its zip, privately), nudge a worker after commit."""
    cleaned = validated_training(owner, raw, upload)
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        check_training_limits(owner)
        training = LoraTraining(owner=owner, total_steps=cleaned["steps"], **cleaned)
        if upload is not None:
            training.upload.save("images.zip", upload, save=False)
        try:
            training.save()
        except BaseException:
            if training.upload:
                training.upload.storage.delete(training.upload.name)
            raise
        transaction.on_commit(lambda: announce_queued(training))
    return training


def announce_queued(training: LoraTraining) -> None:
    events.publish_training(training, "training.queued", position=queue_position(training))
    nudge_training(training)


# --- Cancelling ---------------------------------------------------------------------------------

def can_manage(user, training: LoraTraining) -> bool:
    return user.is_authenticated and (user.is_staff or training.owner_id == user.pk)


def cancel_training(training: LoraTraining) -> LoraTraining:
    """A queued training is cancelled at once; a running one stops after its current step (and
    checkpoints). Cancelling a finished training changes nothing."""
    now = timezone.now()
    if LoraTraining.objects.filter(pk=training.pk, status=Status.QUEUED).update(
            status=Status.CANCELLED, cancel_requested=True, finished_at=now):
        training.refresh_from_db()
        events.publish_training(training, "training.cancelled", step=training.step)
        remove_work_dir(training.pk)
        return training
    LoraTraining.objects.filter(pk=training.pk, status=Status.RUNNING).update(cancel_requested=True)
    training.refresh_from_db()
    return training


# --- Recovery -----------------------------------------------------------------------------------

def recover_trainings(*, on_startup: bool = False) -> dict:
    """Re-nudge queued trainings whose message may be lost; a running training whose worker stopped
    beating is queued again (the next worker resumes from its checkpoint) or, after
    ``LDM_JOB_MAX_ATTEMPTS`` attempts, failed with the reason. Every change is conditional, so
    several processes may run this at once."""
    report = {"renudged": 0, "retried": 0, "failed": 0}
    now = timezone.now()
    queued = LoraTraining.objects.filter(status=Status.QUEUED)
    if not on_startup:
        stale = now - timedelta(seconds=settings.LDM_REQUEUE_AFTER_SECONDS)
        queued = queued.filter(nudged_at__lt=stale) | queued.filter(nudged_at__isnull=True)
    for training in queued.order_by("created_at"):
        nudge_training(training)
        report["renudged"] += 1
    dead_before = now - timedelta(seconds=settings.LDM_HEARTBEAT_TIMEOUT_SECONDS)
    for training in LoraTraining.objects.filter(status=Status.RUNNING, heartbeat_at__lt=dead_before):
        still_running = LoraTraining.objects.filter(pk=training.pk, status=Status.RUNNING, worker=training.worker)
        if training.cancel_requested:
            if still_running.update(status=Status.CANCELLED, finished_at=now, eta_seconds=None):
                training.refresh_from_db()
                events.publish_training(training, "training.cancelled", step=training.step)
                remove_work_dir(training.pk)
            continue
        if training.attempts < settings.LDM_JOB_MAX_ATTEMPTS:
            if still_running.update(status=Status.QUEUED, worker="", eta_seconds=None):
                logger.warning("LoRA training %s lost its worker %s; resuming from its checkpoint (attempt %d done)",
                               training.pk, training.worker, training.attempts)
                training.refresh_from_db()
                events.publish_training(training, "training.queued", position=queue_position(training),
                                        retried=True)
                nudge_training(training)
                report["retried"] += 1
        else:
            message = (f"The worker running this training stopped responding {training.attempts} times; "
                       "it was not retried again.")
            if still_running.update(
                    status=Status.FAILED, finished_at=now, eta_seconds=None, error_message=message,
                    error_detail=f"heartbeat older than {settings.LDM_HEARTBEAT_TIMEOUT_SECONDS}s; last worker "
                                 f"{training.worker}"):
                training.refresh_from_db()
                events.publish_training(training, "training.failed", message=message)
                remove_work_dir(training.pk)
                report["failed"] += 1
    return report
