"""ldmsite's ML core: text-to-image latent diffusion on diffusers, without Django.

Public API (see docs/PERFORMANCE.md and the module docstrings for details)::

    from generation.diffusion import (validate_request, load_pipeline, ModelCache, generate,
                                      write_png, read_png_parameters)

    request = validate_request({"prompt": "a red circle", "steps": 20, "sampler": "Euler a"},
                               limits=model.limits)
    model = cache.get("path/or/hub-id")           # ModelCache(max_bytes).get -> LoadedModel
    result = generate(model, request, on_progress=..., should_cancel=...)
    # several people's compatible requests as one batch (one outcome each, bit-identical to alone)
    outcomes = generate_batch(model, [request, other], on_progress=[..., ...], should_cancel=[..., ...])
    # image to image: the pictures travel beside the request (mode img2img / inpaint / outpaint)
    result = generate(model, request, source=SourceImages(init_image, mask))
    write_png(result.images[0], result.metadata[0], result.parameters[0], "out.png")

The request, sampler-name, source-image and PNG-metadata parts (with a model's limits, the reading of a model
directory's own defaults file and ``ModelLoadError``) import neither torch nor diffusers, so the web
process can validate input cheaply; everything else is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .hashing import SHORT_HASH_DIGITS, directory_content_hash, short_hash
from .pngmeta import format_parameters, parse_parameters, read_png_metadata, read_png_parameters, write_png
from .request import (MAX_PROMPT_CHARS, MAX_SEED, MODEL_DEFAULTS_FILE, REQUEST_FIELDS, GenerationRequest,
                      ModelDefaultsError, ModelLimits, ModelLoadError, RequestValidationError, UnsupportedRequest,
                      read_model_defaults, validate_request)
from .request import MAX_LORAS, check_lora_names, parse_lora_tags  # LoRA names and <lora:...> tags: no torch
from .pngmeta import parse_lora_hashes
from .prompts import has_attention_syntax, parse_prompt_attention, plain_text  # no torch: the parser only
from .samplers import DPMPP_SDE_AVAILABLE, SAMPLER_ALIASES, SAMPLERS, build_scheduler, resolve_sampler
from .sources import SourceImages, check_source

_LAZY = {
    # engine
    "generate": "engine",
    "GenerationResult": "engine",
    "GenerationCancelled": "engine",
    "StepProgress": "engine",
    "ENGINE_VERSION": "engine",
    "library_versions": "engine",
    "guided_step_indices": "engine",
    # batching across people
    "generate_batch": "batch",
    "batch_key": "batch",
    "PerSampleScale": "batch",
    "make_batch_invariant": "invariance",
    # loading and caching
    "load_pipeline": "loading",
    "LoadedModel": "loading",
    "ModelCache": "cache",
    # precision
    "choose_device_and_dtype": "precision",
    "DevicePrecision": "precision",
    "cpu_has_fast_bf16": "precision",
    # previews
    "LatentPreview": "preview",
    "latents_to_preview": "preview",
    "fit_latent_preview": "preview",
    # CLIP
    "ClipBundle": "clip",
    "clip_scores": "clip",
    "clip_score": "clip",
    "spherical_dist_loss": "clip",
    # LoRA files and adapters
    "LoraFile": "lora",
    "LoraMismatch": "lora",
    "LoraFileError": "lora",
    "read_lora": "lora",
    "save_lora": "lora",
    "check_lora": "lora",
    "model_skeleton": "lora",
    "to_kohya": "lora",
    "lora_hash": "lora",
    "use_loras": "lora",
}

__all__ = [
    "GenerationRequest", "ModelLimits", "RequestValidationError", "validate_request", "REQUEST_FIELDS",
    "MAX_PROMPT_CHARS", "MAX_SEED", "ModelLoadError", "UnsupportedRequest", "ModelDefaultsError", "MODEL_DEFAULTS_FILE",
    "read_model_defaults", "directory_content_hash", "short_hash", "SHORT_HASH_DIGITS",
    "SAMPLERS", "SAMPLER_ALIASES", "DPMPP_SDE_AVAILABLE", "resolve_sampler", "build_scheduler",
    "write_png", "read_png_parameters", "read_png_metadata", "format_parameters", "parse_parameters",
    "SourceImages", "check_source", "parse_prompt_attention", "plain_text", "has_attention_syntax",
    "MAX_LORAS", "check_lora_names", "parse_lora_tags", "parse_lora_hashes", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from .cache import ModelCache
    from .clip import ClipBundle, clip_score, clip_scores, spherical_dist_loss
    from .engine import (ENGINE_VERSION, GenerationCancelled, GenerationResult, StepProgress, generate,
                         guided_step_indices, library_versions)
    from .batch import PerSampleScale, batch_key, generate_batch
    from .invariance import make_batch_invariant
    from .loading import LoadedModel, load_pipeline
    from .lora import (LoraFile, LoraFileError, LoraMismatch, check_lora, lora_hash, model_skeleton, read_lora,
                       save_lora, to_kohya, use_loras)
    from .precision import DevicePrecision, choose_device_and_dtype, cpu_has_fast_bf16
    from .preview import LatentPreview, fit_latent_preview, latents_to_preview
