"""The model registry: the built-in model on a fresh database, and adding models."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from generation.diffusion.training.presets import BUILTIN_AUTOGUIDANCE_SCALE, BUILTIN_GUIDANCE_SCALE, BUILTIN_SAMPLER
from generation.models import DiffusionModel

logger = logging.getLogger(__name__)

BUILTIN_SLUG = "ldm-shapes"
# The built-in model was trained at 64x64 (see generation/builtin_model/README.md).
BUILTIN_DEFAULTS = dict(
    name="ldm-shapes (built-in)",
    source="generation/builtin_model",
    family=DiffusionModel.Family.SD1,
    description="The small model ldmsite trains itself: coloured shapes on solid backgrounds. Works offline.",
    default_width=64, default_height=64, max_width=256, max_height=256,
    default_steps=25, max_steps=150, default_sampler=BUILTIN_SAMPLER, default_guidance_scale=BUILTIN_GUIDANCE_SCALE,
    default_autoguidance_scale=BUILTIN_AUTOGUIDANCE_SCALE,
)


def register_builtin_model() -> DiffusionModel | None:
    """Register the shipped model (once); it becomes the default when none is set."""
    directory = Path(settings.LDM_BUILTIN_MODEL_DIR)
    if not (directory / "model_index.json").exists():
        logger.warning("Built-in model not found at %s; not registered.", directory)
        return None
    with transaction.atomic():
        model, created = DiffusionModel.objects.get_or_create(
            slug=BUILTIN_SLUG, defaults={**BUILTIN_DEFAULTS, "has_clip": (directory / "clip").is_dir(),
                                         "has_guide_unet": (directory / "guide_unet" / "config.json").is_file()}
        )
        if created and not DiffusionModel.objects.filter(is_default=True).exists():
            model.is_default = True
            model.save(update_fields=["is_default"])
    return model


def add_model(source: str, *, name: str | None = None, slug: str | None = None, clip_source: str = "",
              make_default: bool = False, loader=None) -> DiffusionModel:
    """Validate that `source` loads, then register it with the limits the engine derives.

    Raises `generation.diffusion.ModelLoadError` (with a message naming the source) when it does not load.
    """
    from generation.diffusion import load_pipeline

    from generation.runner import resolve_source

    loaded = (loader or load_pipeline)(resolve_source(source), clip_source=clip_source or None)
    limits = loaded.limits
    family = loaded.family if loaded.family in DiffusionModel.Family.values else DiffusionModel.Family.CUSTOM
    slug = slug or slugify(name or Path(source.rstrip("/")).name or source)[:100]
    with transaction.atomic():
        if make_default:
            DiffusionModel.objects.filter(is_default=True).update(is_default=False)
        model, _ = DiffusionModel.objects.update_or_create(
            slug=slug,
            defaults=dict(
                name=name or loaded.name, source=source, family=family, clip_source=clip_source,
                revision=loaded.content_hash[:80],
                default_width=limits.default_width, default_height=limits.default_height,
                max_width=limits.max_width, max_height=limits.max_height,
                default_steps=limits.default_steps, max_steps=limits.max_steps,
                default_sampler=limits.default_sampler, default_guidance_scale=limits.default_guidance_scale,
                default_autoguidance_scale=limits.default_autoguidance_scale,
                has_clip=loaded.clip is not None, has_guide_unet=loaded.guide_unet is not None,
                enabled=True, is_default=make_default,
            ),
        )
    return model
