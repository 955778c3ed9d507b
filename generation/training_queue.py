"""LoRA trainings below the actor: their fair order, claiming one, where a run keeps its files,
the training images (an album's, or a zip's, read safely), and a training's state as one dict.

`training_jobs` (submitting, cancelling, recovery) sits above `tasks`; this module sits below it
(the actor claims through `claim_next_training`), so neither imports the other in a circle.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Window
from django.db.models.functions import Coalesce, RowNumber
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from gallery.models import Album
from generation.models import LoraTraining

Status = LoraTraining.Status

# A training zip: images with same-named .txt captions. Bounded before anything is decoded, and
# every member read with a bounded read (a zip's declared sizes are the uploader's word).
MAX_ZIP_BYTES = 64 * 1024 * 1024
MAX_TRAINING_IMAGES = 500
MAX_MEMBER_BYTES = 16 * 1024 * 1024
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024
MAX_CAPTION_BYTES = 4000
MAX_IMAGE_SIDE = 4096
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class TrainingDataError(ValueError):
    """The training images cannot be used; the message is for the person (field ``images``)."""


# --- Order and claims ---------------------------------------------------------------------------

def fair_order():
    """Queued trainings in dispatch order: round-robin across people (as `queue.fair_order` for
    generation jobs), oldest first within a person, a person's running trainings counted as turns
    already had."""
    running = (LoraTraining.objects.filter(owner_id=OuterRef("owner_id"), status=Status.RUNNING)
               .order_by().values("owner_id").annotate(n=Count("pk")).values("n"))
    return LoraTraining.objects.filter(status=Status.QUEUED).annotate(
        turn=Window(RowNumber(), partition_by=[F("owner_id")], order_by=[F("created_at").asc(), F("id").asc()]),
        running=Coalesce(Subquery(running, output_field=IntegerField()), 0),
    ).order_by(F("turn") + F("running"), "created_at", "id")


def claim_next_training(worker: str) -> LoraTraining | None:
    """Move the fairest queued training to running for `worker`: a conditional update, so two
    workers or a message delivered twice never run one training twice."""
    for candidate in fair_order().values_list("pk", flat=True)[:20]:
        now = timezone.now()
        if LoraTraining.objects.filter(pk=candidate, status=Status.QUEUED, cancel_requested=False).update(
                status=Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker,
                attempts=F("attempts") + 1):
            return LoraTraining.objects.select_related("base_model", "owner").get(pk=candidate)
    return None


def queue_position(training: LoraTraining) -> int | None:
    if training.status != Status.QUEUED:
        return None
    order = list(fair_order().values_list("pk", flat=True))
    return order.index(training.pk) + 1 if training.pk in order else None


# --- Files of a run -----------------------------------------------------------------------------

def work_dir(training_id: int) -> Path:
    """Where a training keeps its images and checkpoints while it runs: under the media root, which
    every worker shares (a shared volume in scale-out), so a worker that takes over a dead one's
    training resumes from its checkpoint. Media is never served directly."""
    return Path(settings.MEDIA_ROOT) / "trainings" / "work" / str(training_id)


def checkpoint_dir(training_id: int) -> Path:
    return work_dir(training_id) / "checkpoints"


def remove_work_dir(training_id: int) -> None:
    shutil.rmtree(work_dir(training_id), ignore_errors=True)


# --- Training images ----------------------------------------------------------------------------

def album_pairs(album: Album) -> list:
    """An album's images, each with its prompt as the caption."""
    return [item.image for item in album.items.select_related("image").order_by("position", "id")]


def _decoded(data: bytes, name: str) -> PILImage.Image:
    try:
        with PILImage.open(io.BytesIO(data)) as probe:
            if max(probe.size) > MAX_IMAGE_SIDE:
                raise TrainingDataError(f"{name} is larger than {MAX_IMAGE_SIDE} pixels on a side")
            probe.load()
            return probe.convert("RGB")
    except TrainingDataError:
        raise
    except Exception:  # noqa: BLE001 - whatever PIL refuses is the uploader's file, never a 500
        raise TrainingDataError(f"{name} is not an image this site reads") from None


def read_zip(source, *, decode: bool = True) -> list[tuple[str, bytes, str]]:
    """(name, image bytes, caption) of each image in a training zip, sorted by name.

    Safe against zip bombs (declared and actual sizes bounded: each member, the sum, the count)
    and path tricks (members are never written under their own names: only their base names pair
    images with captions). ``decode`` also checks each image opens."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise TrainingDataError("is not a zip file") from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()
                   and not PurePosixPath(info.filename).name.startswith(".")
                   and "__MACOSX" not in PurePosixPath(info.filename).parts]
        if len(members) > 2 * MAX_TRAINING_IMAGES:
            raise TrainingDataError(f"holds more than {MAX_TRAINING_IMAGES} images")
        if sum(info.file_size for info in members) > MAX_UNZIPPED_BYTES:
            raise TrainingDataError(f"unpacks to more than {MAX_UNZIPPED_BYTES // 2**20} MiB")
        images: dict[str, zipfile.ZipInfo] = {}
        captions: dict[str, zipfile.ZipInfo] = {}
        for info in members:
            path = PurePosixPath(info.filename.replace("\\", "/"))
            key = str(path.with_suffix("")).lower()
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images[key] = info
            elif path.suffix.lower() == ".txt":
                captions[key] = info
        if not images:
            raise TrainingDataError("holds no images (PNG, JPEG, WebP or BMP)")
        if len(images) > MAX_TRAINING_IMAGES:
            raise TrainingDataError(f"holds more than {MAX_TRAINING_IMAGES} images")
        total = 0
        found = []
        for key in sorted(images):
            info = images[key]
            data = _bounded_read(archive, info, MAX_MEMBER_BYTES)
            total += len(data)
            caption = ""
            if key in captions:
                caption = _bounded_read(archive, captions[key], MAX_CAPTION_BYTES).decode("utf-8", "replace")
                total += len(caption)
            if total > MAX_UNZIPPED_BYTES:
                raise TrainingDataError(f"unpacks to more than {MAX_UNZIPPED_BYTES // 2**20} MiB")
            name = PurePosixPath(info.filename).name
            if decode:
                _decoded(data, name)
            found.append((name, data, " ".join(caption.split())))
        return found


def _bounded_read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise TrainingDataError(f"{PurePosixPath(info.filename).name} is larger than {limit // 1024} KiB")
    try:
        with archive.open(info) as member:
            data = member.read(limit + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
        raise TrainingDataError(f"{PurePosixPath(info.filename).name} could not be unpacked "
                                "(damaged or encrypted)") from None
    if len(data) > limit:
        raise TrainingDataError(f"{PurePosixPath(info.filename).name} is larger than {limit // 1024} KiB")
    return data


def write_dataset(training: LoraTraining, destination: Path) -> int:
    """Write the training's images as PNGs with same-named .txt captions into `destination` (the
    folder `train_lora` reads), under names of our own; returns how many.

    Written once per training (into a side folder, renamed when complete): a retry after a dead
    worker trains on the same pictures even if the album changed meanwhile, so its checkpoint
    (which `train_lora` matches by a fingerprint of the data) still applies."""
    if destination.is_dir():
        return len(list(destination.glob("*.png")))
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a killed worker's half-written folder
    partial.mkdir(parents=True)
    pairs: list[tuple[PILImage.Image, str]] = []
    if training.upload:
        with training.upload.open("rb") as handle:
            for name, data, caption in read_zip(io.BytesIO(handle.read())):
                pairs.append((_decoded(data, name), caption))
    elif training.album_id is not None:
        for image in album_pairs(training.album):
            with image.file.open("rb") as handle:
                pairs.append((_decoded(handle.read(), f"image {image.pk}"), image.prompt))
    if not pairs:
        raise TrainingDataError("no training images are left (the album is empty or was deleted)")
    for index, (picture, caption) in enumerate(pairs):
        picture.save(partial / f"{index:05d}.png")
        (partial / f"{index:05d}.txt").write_text(caption)
    partial.rename(destination)
    return len(pairs)


# --- State as one dict ----------------------------------------------------------------------------

def training_snapshot(training: LoraTraining) -> dict:
    """A training's current state (websocket snapshot, API, page)."""
    return {
        "type": "training.snapshot",
        "training": training.pk,
        "seq": training.event_seq,
        "status": training.status,
        "name": training.name,
        "trigger": training.trigger,
        "step": training.step,
        "total": training.total_steps,
        "start_step": training.start_step,
        "position": queue_position(training),
        "eta": training.eta_seconds if training.status == Status.RUNNING else None,
        "losses": training.losses,
        "samples_url": samples_url(training),
        "samples_step": training.samples_step or None,
        "error": training.error_message or None,
        "lora": ({"id": training.lora_id, "name": training.lora.name,
                  "url": reverse("gallery:lora", args=[training.lora_id]),
                  "prompt_tag": f"<lora:{training.lora.name}:1>"} if training.lora_id else None),
        "url": reverse("generation:training", args=[training.pk]),
        "cancel_url": reverse("generation:training_cancel", args=[training.pk]),
    }


def samples_url(training: LoraTraining) -> str | None:
    if not training.samples:
        return None
    return reverse("generation:training_samples", args=[training.pk]) + f"?step={training.samples_step}"
