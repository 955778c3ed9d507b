"""Gallery logic shared by pages, the API and workers."""

import io

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from gallery.models import Image, unguessable_name
from generation.diffusion import write_png

THUMBNAIL_SIZE = 256


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
