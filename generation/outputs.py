"""Storing a finished image: the output check, the PNG with its parameters, the thumbnail.

LDM_OUTPUT_CHECK: "none"; "safety-checker:<dir>" (`generation.diffusion.safety.SafetyChecker`, from a
local directory); or the dotted path of a callable `check(picture: PIL.Image.Image, metadata: dict)`
returning falsy to pass, True or a reason string to flag. An image the check flags or cannot
check is stored hidden and held for staff review (fail closed).
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from gallery.models import AuditEntry, Image, OutputReview, unguessable_name
from generation.diffusion import write_png
from generation.diffusion.safety import SafetyChecker

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256
HELD_REASON = {
    OutputReview.Outcome.FLAGGED: "Held for review: the automatic output check flagged this image.",
    OutputReview.Outcome.ERROR: "Held for review: the automatic output check could not check this image.",
}


@dataclass
class Verdict:
    outcome: str  # OutputReview.Outcome
    check_name: str
    detail: str = ""


@functools.lru_cache(maxsize=4)
def load_output_check(spec: str):
    """The check named by the LDM_OUTPUT_CHECK value, or None for "none"."""
    if spec in ("", "none"):
        return None
    if spec.startswith("safety-checker:"):
        return SafetyChecker(spec.partition(":")[2])
    return import_string(spec)


def run_output_check(picture, metadata: dict) -> Verdict | None:
    """None when the image may be published; a Verdict when it must be held (flagged or failed)."""
    spec = getattr(settings, "LDM_OUTPUT_CHECK", "none") or "none"
    try:
        check = load_output_check(spec)
        if check is None:
            return None
        result = check(picture, metadata)
    except Exception as error:  # fail closed: an image nobody could check is not published
        logger.exception("Output check %s failed; the image is held for review", spec)
        return Verdict(OutputReview.Outcome.ERROR, spec, f"{type(error).__name__}: {error}"[:2000])
    if not result:
        return None
    detail = result if isinstance(result, str) else ""
    return Verdict(OutputReview.Outcome.FLAGGED, spec, detail[:2000])


def make_thumbnail(picture) -> bytes:
    thumb = picture.convert("RGB").copy()
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    thumb.save(buffer, format="WEBP", quality=85)
    return buffer.getvalue()


def store_generated_image(generation, index: int, picture, metadata: dict, parameters: str,
                          clip_score: float | None) -> Image:
    """Save one output of a job as the owner's (unsaved, private) image.

    Idempotent per (job, index): a job retried after a crash reuses the image it
    already stored instead of making a second one.
    """
    existing = Image.objects.filter(generation=generation, index=index).first()
    if existing is not None:
        return existing
    png = io.BytesIO()
    write_png(picture, metadata, parameters, png)
    file_name = default_storage.save(unguessable_name("png"), ContentFile(png.getvalue()))
    thumb_name = default_storage.save(unguessable_name("webp"), ContentFile(make_thumbnail(picture)))
    request = generation.params
    try:
        with transaction.atomic():
            return Image.objects.create(
                owner=generation.owner, generation=generation, index=index,
                file=file_name, thumbnail=thumb_name,
                width=picture.width, height=picture.height,
                seed=metadata.get("seed", request["seed"] + index),
                prompt=request["prompt"], negative_prompt=request.get("negative_prompt", ""),
                model=generation.model, model_name=generation.model.name,
                sampler=request.get("sampler", ""), steps=request.get("steps", 0),
                guidance_scale=request.get("guidance_scale", 0),
                clip_score=clip_score, parameters=parameters, metadata=metadata,
            )
    except IntegrityError:
        # Another attempt stored this index first: keep theirs, drop our files.
        default_storage.delete(file_name)
        default_storage.delete(thumb_name)
        return Image.objects.get(generation=generation, index=index)


def store_checked_image(generation, index: int, picture, metadata: dict, parameters: str,
                        clip_score: float | None) -> Image:
    """Run the output check, then store the image; a held image is stored hidden with its review in
    the same transaction, so there is no moment at which it could be published unchecked."""
    verdict = run_output_check(picture, metadata)
    with transaction.atomic():
        image = store_generated_image(generation, index, picture, metadata, parameters, clip_score)
        if verdict is not None:
            review, created = OutputReview.objects.get_or_create(image=image, defaults={
                "outcome": verdict.outcome, "check_name": verdict.check_name[:200], "detail": verdict.detail})
            if created:
                image.hidden, image.hidden_reason = True, HELD_REASON[verdict.outcome]
                image.save(update_fields=["hidden", "hidden_reason"])
                AuditEntry.objects.record(
                    AuditEntry.Action.OUTPUT_FLAGGED, actor=None, via=AuditEntry.Via.SYSTEM, target=image,
                    subject=image.owner, reason=verdict.detail or review.get_outcome_display(),
                    outcome=verdict.outcome)
    return image


def image_summary(image: Image) -> dict:
    """A stored image as the websocket events, snapshots and job pages show it."""
    return {"id": image.pk, "url": image.file_url(), "thumbnail": image.thumbnail_url(),
            "page": image.get_absolute_url(), "seed": image.seed, "clip_score": image.clip_score,
            "width": image.width, "height": image.height}
