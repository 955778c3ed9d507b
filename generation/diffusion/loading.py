"""Loading a diffusers text-to-image pipeline (plus its CLIP model and preview factors).

A source is a local diffusers directory (``save_pretrained`` layout, ``model_index.json`` at
its root) or a Hugging Face Hub repository id. Stable Diffusion 1.x/2.x load as
``StableDiffusionPipeline`` and SDXL as ``StableDiffusionXLPipeline``, chosen from
``model_index.json``. The safety checker is never loaded (nor downloaded).

Conventions of a model directory that are picked up automatically:

- ``clip/``: a ``transformers.CLIPModel`` (and optionally its tokenizer and
  ``preprocessor_config.json``) used for CLIP guidance and CLIP scores, unless ``clip_source``
  says otherwise;
- ``guide_unet/``: a weaker ``UNet2DConditionModel`` of the same kind, for autoguidance (see
  :mod:`.autoguidance`);
- ``latent_preview.json``: ``{"matrix": [[r, g, b] x latent_channels], "bias": [r, g, b]}``,
  the latent -> RGB preview projection (see :mod:`.preview`).
- ``ldmsite_defaults.json``: the model's own defaults for a request's left-out fields (sampler,
  guidance and autoguidance scales, steps, size) and its maximum size and steps, read into
  ``LoadedModel.limits`` (see :func:`.request.read_model_defaults`); without it the defaults are
  ldmsite's general ones at the UNet's native size.

Every failure to find or read a model becomes :class:`ModelLoadError`, whose message names the
source and says what to do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .autoguidance import guide_unet_path, load_guide_unet
from .clip import CLIP_MEAN, CLIP_STD, ClipBundle
from .fastpath import apply_fast_path
from .hashing import directory_content_hash
from .precision import (DevicePrecision, choose_device_and_dtype, dtype_name, measure_precision, measured_choice,
                        precision_candidates, quiet_dtype_casts)
from .preview import PREVIEW_FILE_NAME, LatentPreview, fitted_latent_preview, known_latent_preview
from .request import (ModelDefaultsError, ModelLimits, ModelLoadError,
                      limits_with_model_defaults, read_model_defaults)

logger = logging.getLogger(__name__)

SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
# Inpainting checkpoints (a 9-channel UNet: latents, mask, masked image) name their own pipeline
# class; they have the same components, so they load as the text-to-image class and the engine
# makes the inpainting pipeline per job, as for any model (it refuses txt2img and img2img for them).
INPAINTING_PIPELINES = {"StableDiffusionInpaintPipeline": "StableDiffusionPipeline",
                        "StableDiffusionXLInpaintPipeline": "StableDiffusionXLPipeline"}
CLIP_SUBFOLDER = "clip"


@dataclass(eq=False)
class LoadedModel:
    """A pipeline ready to generate, with everything the engine records about it."""

    pipeline: Any
    source: str
    name: str
    path: Path
    family: str  # "sd1", "sd2", "sdxl" or "custom"
    precision: DevicePrecision
    content_hash: str
    revision: str | None
    clip: ClipBundle | None
    scheduler_config: dict
    limits: ModelLimits
    load_seconds: float
    preview_factors: LatentPreview | None = None
    guide_unet: Any = None  # for autoguidance; None when the model directory has no guide_unet/
    fast_path: Any = None  # what .fastpath.apply_fast_path did (LDM_FAST_PATH); None: never asked
    _preview_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def device(self) -> torch.device:
        return self.precision.device

    @property
    def dtype(self) -> torch.dtype:
        return self.precision.dtype

    @property
    def pipeline_class(self) -> str:
        return type(self.pipeline).__name__

    @property
    def short_hash(self) -> str:
        """The first 10 hex digits, like AUTOMATIC1111's "Model hash"."""
        return self.content_hash[:10]

    @property
    def nbytes(self) -> int:
        """Estimated memory of the weights: parameters and buffers of every module."""
        modules = [m for m in self.pipeline.components.values() if isinstance(m, torch.nn.Module)]
        if self.clip is not None:
            modules.append(self.clip.model)
        if self.guide_unet is not None:
            modules.append(self.guide_unet)
        return sum(module_nbytes(m) for m in modules)

    def latent_preview(self) -> LatentPreview:
        """The preview projection; fitted against the VAE on first use when none is known."""
        if self.preview_factors is None:
            with self._preview_lock:
                if self.preview_factors is None:
                    self.preview_factors = fitted_latent_preview(self.content_hash, self.pipeline.vae)
        return self.preview_factors

    def describe(self) -> dict:
        """What image metadata records about the model."""
        return {
            "name": self.name,
            "source": self.source,
            "hash": self.content_hash,
            "short_hash": self.short_hash,
            "revision": self.revision,
            "family": self.family,
            "pipeline_class": self.pipeline_class,
            "clip_model": self.clip.name if self.clip else None,
            "guide_unet": self.guide_unet is not None,
            "precision": self.precision.to_dict(),
            # only when on: a model loaded without the fast path records exactly what it did before
            **({"fast_path": self.fast_path.to_dict()} if getattr(self.fast_path, "enabled", False) else {}),
        }


def module_nbytes(module: torch.nn.Module) -> int:
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        total += tensor.numel() * tensor.element_size()
    return total


# ----------------------------------------------------------------------------------- loading

def _looks_like_path(source: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a filesystem path."""
    return (source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1
            or Path(source).expanduser().exists() or Path(source.split("/")[0]).is_dir())


def _resolve_source(source: str, local_files_only: bool | None) -> tuple[Path, str | None]:
    """(local directory, hub revision or None) for a source, or ModelLoadError."""
    candidate = Path(source).expanduser()
    if candidate.is_dir():
        if not (candidate / "model_index.json").is_file():
            raise ModelLoadError(source, (
                f"Model '{source}' is a directory without model_index.json, so it is not a diffusers pipeline "
                "directory. Point to the folder that pipeline.save_pretrained() wrote (it holds model_index.json, "
                "unet/, vae/, text_encoder/, tokenizer/ and scheduler/), or convert a single-file checkpoint "
                "with diffusers' convert_original_stable_diffusion_to_diffusers.py first."))
        return candidate, None
    if _looks_like_path(source):
        raise ModelLoadError(source, (
            f"Model '{source}' was not found: no such directory. Give an existing local diffusers directory, or "
            "a Hugging Face Hub id such as 'stable-diffusion-v1-5/stable-diffusion-v1-5'."))

    from diffusers import DiffusionPipeline  # imported here so tests can patch download

    try:
        folder = DiffusionPipeline.download(source, local_files_only=local_files_only, safety_checker=None)
    except Exception as error:  # noqa: BLE001 - every hub failure becomes one clear error
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        name = type(error).__name__
        if name in ("RepositoryNotFoundError", "GatedRepoError") or "404" in str(error):
            advice = ("Check the id; for a private or gated model, log in with `hf auth login` "
                      "(or set HF_TOKEN) on the worker.")
        else:
            advice = ("This machine could not reach the Hugging Face Hub (offline?) and the model is not in "
                      "its local Hugging Face cache. Download it where there is internet access "
                      f"(`hf download {source}`) and copy the cache over, or register a local diffusers "
                      "directory instead of a hub id.")
        raise ModelLoadError(source, f"Could not load model '{source}' from the Hugging Face Hub. {advice} "
                                     f"(cause: {reason})") from error
    folder = Path(folder)
    return folder, folder.name if folder.parent.name == "snapshots" else None


def _pipeline_class(source: str, path: Path):
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(source, f"Model '{source}' has an unreadable model_index.json ({error}); "
                                     "re-download or re-save the model.") from error
    class_name = index.get("_class_name")
    if isinstance(class_name, (list, tuple)):
        class_name = class_name[-1]
    class_name = INPAINTING_PIPELINES.get(class_name, class_name)
    if class_name not in SUPPORTED_PIPELINES:
        raise ModelLoadError(source, (
            f"Model '{source}' is a {class_name}; ldmsite runs "
            f"{', '.join([*SUPPORTED_PIPELINES, *INPAINTING_PIPELINES])} models (Stable Diffusion 1.x/2.x "
            "and SDXL, and their inpainting checkpoints). Register a model of one of those kinds."))
    import diffusers

    return getattr(diffusers, class_name), index


def _family(pipeline) -> str:
    if type(pipeline).__name__ == "StableDiffusionXLPipeline":
        return "sdxl"
    hidden = getattr(getattr(pipeline.text_encoder, "config", None), "hidden_size", None)
    unet_blocks = list(pipeline.unet.config.block_out_channels)
    if unet_blocks == [320, 640, 1280, 1280]:
        if hidden == 768:
            return "sd1"
        if hidden == 1024:
            return "sd2"
    return "custom"


def _load_clip(source: str, clip_source: str, pipeline, device, dtype, local_files_only) -> ClipBundle:
    from transformers import AutoTokenizer, CLIPModel

    kwargs: dict[str, Any] = {}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        model = CLIPModel.from_pretrained(clip_source, dtype=dtype, **kwargs)
    except Exception as error:  # noqa: BLE001
        raise ModelLoadError(source, (
            f"The CLIP model '{clip_source}' configured for model '{source}' could not be loaded "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Give a local transformers CLIPModel "
            "directory or a reachable hub id, or configure no CLIP model (CLIP guidance and scores are then off)."
        )) from error
    model.to(device).eval().requires_grad_(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(clip_source, **kwargs)
    except Exception:  # noqa: BLE001 - a CLIP folder may ship weights only; SD's tokenizer is CLIP's BPE
        tokenizer = pipeline.tokenizer
    mean, std = CLIP_MEAN, CLIP_STD
    preprocessor = Path(clip_source) / "preprocessor_config.json"
    if preprocessor.is_file():
        config = json.loads(preprocessor.read_text())
        mean = tuple(config.get("image_mean", mean))
        std = tuple(config.get("image_std", std))
    return ClipBundle(model=model, tokenizer=tokenizer, image_size=int(model.config.vision_config.image_size),
                      mean=mean, std=std, name=str(clip_source))


def _limits(pipeline, has_clip: bool, has_guide_unet: bool, stated: dict, path: Path) -> ModelLimits:
    """The UNet's native size as the default (up to twice it, at least 1024, as the maximum),
    then what the directory's defaults file states."""
    native = int(pipeline.unet.config.sample_size) * int(pipeline.vae_scale_factor)
    derived = ModelLimits.for_model(
        has_clip=has_clip, has_guide_unet=has_guide_unet, default_width=native, default_height=native,
        max_width=max(2 * native, 1024), max_height=max(2 * native, 1024),
    )
    return limits_with_model_defaults(derived, stated, path)


def _quiet_loading() -> None:
    """Loading progress bars would flood worker logs; the load time is recorded instead."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


_MEASURED: dict[str, dict[str, float]] = {}  # precision timings by model and device, for this process
_MEASURED_LOCK = threading.Lock()


def _device_key(content_hash: str, device: torch.device) -> str:
    """What a precision measurement holds for: the model's content, the device (for a CPU its
    capability, for a GPU its name) and the torch build."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{device.type}:{torch.backends.cpu.get_cpu_capability()}:{torch.get_num_threads()}threads"
    return f"{content_hash}|{hardware}|torch {torch.__version__}"


def _remembered_timings(key: str, cache_file: Path | None) -> dict[str, float] | None:
    with _MEASURED_LOCK:
        if key in _MEASURED:
            return _MEASURED[key]
    if cache_file is not None and cache_file.is_file():
        try:
            stored = json.loads(cache_file.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            stored = None
        if isinstance(stored, dict) and stored and all(isinstance(v, (int, float)) for v in stored.values()):
            with _MEASURED_LOCK:
                _MEASURED[key] = {str(k): float(v) for k, v in stored.items()}
                return _MEASURED[key]
    return None


def _remember_timings(key: str, timings: dict[str, float], cache_file: Path | None) -> None:
    with _MEASURED_LOCK:
        _MEASURED[key] = timings
        if cache_file is None:
            return
        try:
            known = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file.is_file() else {}
            if not isinstance(known, dict):
                known = {}
        except (OSError, ValueError):
            known = {}
        known[key] = timings
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = cache_file.with_suffix(".tmp")
            temporary.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
            temporary.replace(cache_file)
        except OSError as error:  # a read-only data directory: measured again next start
            logger.warning("could not record precision timings in %s: %s", cache_file, error)


def _choose_by_measurement(pipeline, precision: DevicePrecision, content_hash: str, limits: ModelLimits,
                           cache_file: Path | None) -> DevicePrecision:
    """``auto``: the faster of the device's candidate precisions for this model, measured once per
    model and device (remembered in this process and in ``cache_file``)."""
    candidates = precision_candidates(precision)
    if len(candidates) < 2:
        return precision
    key = _device_key(content_hash, precision.device)
    timings = _remembered_timings(key, cache_file)
    if timings is None or set(timings) != {dtype_name(dtype) for dtype in candidates}:
        timings = measure_precision(pipeline.unet, pipeline.text_encoder, candidates, height=limits.default_height,
                                    width=limits.default_width, device=precision.device)
        _remember_timings(key, timings, cache_file)
        logger.info("precision of %s on %s measured: %s", content_hash[:10], precision.device, timings)
    return measured_choice(precision, timings)


def load_pipeline(source: str, *, device: str | torch.device | None = None,
                  dtype: torch.dtype | str | None = None, clip_source: str | bool | None = None,
                  local_files_only: bool | None = None, precision_cache: str | Path | None = None,
                  fast_path: str = "off") -> LoadedModel:
    """Load ``source`` (local diffusers directory or hub id) for generation.

    ``dtype``: a ``torch.dtype`` or a precision setting (``auto``/``fp32``/``bf16``/``fp16``;
    ``None`` means ``auto``, see :func:`choose_device_and_dtype`). ``clip_source``: ``None``
    uses the model's ``clip/`` subfolder when there is one, ``False`` or ``""`` loads no CLIP,
    a string loads that CLIPModel. ``local_files_only``: ``None`` follows ``HF_HUB_OFFLINE``.
    ``precision_cache``: a JSON file where ``auto`` remembers its precision measurements per model
    and device (see :mod:`.precision`); without one they are remembered in this process only.
    ``fast_path``: ``auto``/``on``/``off`` (:mod:`.fastpath`; workers pass ``LDM_FAST_PATH``): channels_last,
    SDPA and the UNet compiled and warmed up here, at load; ``off`` (the default) leaves the model as loaded.
    """
    started = time.perf_counter()
    source = str(source)
    if isinstance(dtype, torch.dtype):
        precision = choose_device_and_dtype("auto", device)
        precision = DevicePrecision(precision.device, dtype, dtype_name(dtype), "set explicitly",
                                    precision.attention)
    else:
        try:
            precision = choose_device_and_dtype(dtype or "auto", device)
        except ValueError as error:
            raise ModelLoadError(source, f"Cannot load model '{source}': {error}") from error

    _quiet_loading()
    path, revision = _resolve_source(source, local_files_only)
    pipeline_class, index = _pipeline_class(source, path)
    try:  # before the weights: a malformed defaults file fails fast
        stated = read_model_defaults(path)
    except ModelDefaultsError as error:
        error.source = source
        raise
    extra: dict[str, Any] = {}
    if "safety_checker" in index:
        extra.update(safety_checker=None, requires_safety_checker=False)
    content_hash = directory_content_hash(path)
    measuring = len(precision_candidates(precision)) > 1
    try:  # measured: loaded in fp32, converted once to the winner
        pipeline = pipeline_class.from_pretrained(path, dtype=torch.float32 if measuring else precision.dtype,
                                                  local_files_only=True, **extra)
    except Exception as error:  # noqa: BLE001
        raise ModelLoadError(source, (
            f"Model '{source}' ({path}) could not be read as a {pipeline_class.__name__}: "
            f"{type(error).__name__}: {str(error).splitlines()[0][:300]}. Its files are missing or incomplete; "
            "re-download it or save it again with pipeline.save_pretrained().")) from error
    pipeline.to(precision.device)
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval().requires_grad_(False)
    pipeline.set_progress_bar_config(disable=True)
    if measuring:
        sized = _limits(pipeline, False, False, stated, path)  # measured at the model's default size
        precision = _choose_by_measurement(pipeline, precision, content_hash, sized,
                                           Path(precision_cache) if precision_cache else None)
        if precision.dtype != torch.float32:
            with quiet_dtype_casts():
                pipeline.to(dtype=precision.dtype)

    if clip_source is None and (path / CLIP_SUBFOLDER / "config.json").is_file():
        clip_source = str(path / CLIP_SUBFOLDER)
    clip = None
    if clip_source:
        clip = _load_clip(source, str(clip_source), pipeline, precision.device, precision.dtype,
                          True if Path(str(clip_source)).is_dir() else local_files_only)

    guide = None
    guide_path = guide_unet_path(path)
    if guide_path is not None:
        try:
            guide = load_guide_unet(guide_path, device=precision.device, dtype=precision.dtype)
        except Exception as error:  # noqa: BLE001
            raise ModelLoadError(source, (
                f"Model '{source}' has a {guide_path.name}/ folder for autoguidance that could not be read "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Save a UNet2DConditionModel "
                "there, or remove the folder.")) from error

    family = _family(pipeline)
    preview = None
    preview_file = path / PREVIEW_FILE_NAME
    if preview_file.is_file():
        try:
            preview = LatentPreview.load(preview_file)
        except (OSError, ValueError, KeyError) as error:
            logger.warning("ignoring unreadable %s: %s", preview_file, error)
    if preview is None:
        preview = known_latent_preview(family, pipeline.vae.config)

    try:
        limits = _limits(pipeline, clip is not None, guide is not None, stated, path)
    except ModelDefaultsError as error:
        error.source = source
        raise
    name = path.resolve().name if Path(source).expanduser().is_dir() else source
    loaded = LoadedModel(
        pipeline=pipeline,
        source=source,
        name=name,
        path=path,
        family=family,
        precision=precision,
        content_hash=content_hash,
        revision=revision,
        clip=clip,
        scheduler_config=dict(pipeline.scheduler.config),
        limits=limits,
        load_seconds=time.perf_counter() - started,
        preview_factors=preview,
        guide_unet=guide,
    )
    try:
        apply_fast_path(loaded, fast_path)
    except ValueError as error:  # an unknown setting
        raise ModelLoadError(source, f"Cannot load model '{source}': {error}") from error
    loaded.load_seconds = time.perf_counter() - started  # the fast path's compile and warm-up included
    return loaded
