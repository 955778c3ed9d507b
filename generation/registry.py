"""The model registry: the built-in model on a fresh database, and adding models.

A model's defaults (sampler, guidance and autoguidance scales, steps, size) and maxima are the
model's own: they come from its directory's ``ldmsite_defaults.json`` (read by the ML core) when it
is registered, and are stored on the ``DiffusionModel`` row, where staff may override them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from generation import diffusion  # load_pipeline loads torch on first use (PEP 562)
from generation.diffusion.hashing import directory_content_hash
from generation.diffusion.request import ModelLimits, read_model_defaults
from generation.models import DiffusionModel
from generation.workers import resolve_source

logger = logging.getLogger(__name__)

BUILTIN_SLUG = "ldm-shapes"
BUILTIN_DEFAULTS = dict(
    name="ldm-shapes (built-in)",
    source="generation/builtin_model",
    family=DiffusionModel.Family.SD1,
    description="The small model ldmsite trains itself: coloured shapes on solid backgrounds. Works offline.",
)


def stored_limits(limits: ModelLimits) -> dict:
    """The ``DiffusionModel`` field values for a model's limits (the fields have the same names)."""
    return {**limits.stated(), "has_clip": limits.has_clip, "has_guide_unet": limits.has_guide_unet}


def record_content_hash(model: DiffusionModel) -> None:
    """Record a local model's content hash on a row that has none (one staff made by hand in the
    admin): its identity in PNGs and the A1111 API. A Hub id not downloaded here keeps none
    until `add_model` loads it."""
    path = Path(resolve_source(model.source))
    if not model.revision and (path / "model_index.json").is_file():
        model.revision = directory_content_hash(path)


def register_builtin_model() -> DiffusionModel | None:
    """Register the shipped model (once) with the defaults its directory states; it becomes the
    default model when none is set.

    Read without loading the weights (this runs after every migrate), so the built-in model's
    ``ldmsite_defaults.json`` states every default and maximum (a test holds the loaded model's
    limits equal to the registered ones). Its ``revision`` is the directory's content hash, the
    digest the engine writes into every PNG ("Model hash": its first 10 hex digits) and the A1111
    API reports (docs/API.md); an existing row gets it when it has none, or a new one when the
    shipped files changed.
    """
    directory = Path(settings.LDM_BUILTIN_MODEL_DIR)
    if not (directory / "model_index.json").exists():
        logger.warning("Built-in model not found at %s; not registered.", directory)
        return None
    limits = ModelLimits.for_model(has_clip=(directory / "clip" / "config.json").is_file(),
                                   has_guide_unet=(directory / "guide_unet" / "config.json").is_file(),
                                   **read_model_defaults(directory))
    revision = directory_content_hash(directory)
    with transaction.atomic():
        model, created = DiffusionModel.objects.get_or_create(
            slug=BUILTIN_SLUG, defaults={**BUILTIN_DEFAULTS, **stored_limits(limits), "revision": revision}
        )
        if model.revision != revision:
            model.revision = revision
            model.save(update_fields=["revision"])
        if created and not DiffusionModel.objects.filter(is_default=True).exists():
            model.is_default = True
            model.save(update_fields=["is_default"])
    return model


def add_model(source: str, *, name: str | None = None, slug: str | None = None, clip_source: str = "",
              make_default: bool = False, loader=None) -> DiffusionModel:
    """Validate that `source` loads, then register it with the limits the engine derives: the
    model's own defaults (its directory's ``ldmsite_defaults.json``) over ones read off its weights.
    Registering a model again takes them afresh.

    Raises `generation.diffusion.ModelLoadError` (with a message naming the source) when it does not
    load, a malformed defaults file included.
    """
    loaded = (loader or diffusion.load_pipeline)(resolve_source(source), clip_source=clip_source or None)
    family = loaded.family if loaded.family in DiffusionModel.Family.values else DiffusionModel.Family.CUSTOM
    slug = slug or slugify(name or Path(source.rstrip("/")).name or source)[:100]
    with transaction.atomic():
        if make_default:
            DiffusionModel.objects.filter(is_default=True).update(is_default=False)
        model, _ = DiffusionModel.objects.update_or_create(
            slug=slug,
            defaults=dict(
                name=name or loaded.name, source=source, family=family, clip_source=clip_source,
                revision=loaded.content_hash[:80], **stored_limits(loaded.limits),
                enabled=True, is_default=make_default,
            ),
        )
    return model
