"""Generation: a validated request + a loaded model -> images, seeds, CLIP scores, metadata.

:func:`generate` is four named steps, in the manner of a diffusers pipeline's ``__call__``:
:func:`check_inputs` (refuse what the model cannot do), :func:`prepare` (scheduler, pipeline
object, generators, guidance wrappers, preview projection), :func:`run` (the denoising call
with its step callbacks) and :func:`describe` (CLIP scores, timings, metadata, PNG parameters).

The denoising loop is the pipeline's own ``__call__``; the engine adds to it only through the
two hooks diffusers offers, so that with CLIP guidance and autoguidance off its pixels are exactly
those of a plain ``pipeline(...)`` call with the same scheduler, seeds and parameters:

- ``callback_on_step_end`` (after every step): the cancel check, progress/ETA and the preview.
  A cancel after the first step sets the pipeline's own interrupt flag and hands it the current
  x0 estimate as its latents, so the pipeline skips the steps left and decodes what the run has;
- a wrapper around the job's own scheduler ``step`` that sees the noise prediction the sampler
  is about to use. It remembers the noise level and model output so the preview can show the
  predicted clean latents x0, and on CLIP-guided steps it moves that noise prediction along the
  CLIP gradient before the scheduler uses it (see :mod:`.clip`). Guiding the noise prediction,
  rather than editing latents after the step, keeps the sampler's own update rule -- including
  multistep history (DPM++, UniPC, PNDM) -- consistent with the guided x0.

With autoguidance on, the job's pipeline is handed an :class:`~.autoguidance.AutoguidedUNet`
over the same weights in place of its UNet, which adds the guide model's correction to each
prediction.

Image to image (``request.mode``; the pictures come beside the request as
:class:`~.sources.SourceImages`): img2img runs diffusers' ``StableDiffusionImg2ImgPipeline``,
inpaint and outpaint its ``StableDiffusionInpaintPipeline`` (the SDXL forms for SDXL models),
each made from the loaded pipeline as ``from_pipe`` makes one (:func:`job_pipeline`) -- the same
weights, this job's scheduler and UNet stand-in. A 9-channel (inpainting) UNet inpaints natively; a 4-channel one by the
pipeline's latent blending. :func:`~.sources.prepare_source` fits the source and builds the mask
(resize mode, invert, blur, outpaint canvas, "fill"); ``inpaint_full_res`` is the pipeline's
``padding_mask_crop``; the result is pasted over the (fitted) source through the blurred mask, as
A1111 and diffusers' ``apply_overlay`` do. "latent noise" / "latent nothing" replace the masked
part of the encoded source with noise (seeded seed + k) / zeros before it is noised, as A1111
does, by wrapping the job pipeline's ``prepare_latents``. With a batch, the source is encoded
once per image with that image's generator, so image k stays the image of seed + k.

Hires fix (txt2img with ``enable_hr``): a first pass at width x height, then an img2img pass at
``request.hr_size`` over its latents (interpolated: the "Latent" upscalers) or its decoded
images (resampled with Pillow, encoded again), with new per-image generators seeded seed + k.
Progress counts the steps of both passes; a cancel in either keeps what the run has.

Each job gets a fresh scheduler and a fresh pipeline object sharing the model's weights, so
worker threads can run jobs on one resident model concurrently. Image k uses seed + k through
its own CPU ``torch.Generator`` (a list of generators, one per image), which makes image k
independent of the batch size and of the device, as in ComfyUI's CPU noise.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from diffusers import (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                       StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline)
from PIL import Image

from .autoguidance import AutoguidedUNet
from .invariance import kernels_name, make_batch_invariant
from .clip import clip_guidance_gradient, clip_scores, guided_model_output
from .loading import LoadedModel
from .lora import AppliedLora, lora_hashes_text, resolve_loras, use_loras
from .pngmeta import format_parameters
from .preview import LatentPreview, latents_to_preview
from .prompts import plain_text, prompt_arguments
from .request import LATENT_UPSCALERS, GenerationRequest, UnsupportedRequest
from .samplers import SAMPLERS
from .sources import PreparedSource, SourceImages, check_source, prepare_source

ENGINE_VERSION = "1.0"


class StepProgress:
    """What ``on_progress`` receives after every denoising step.

    ``preview`` is computed on first access (then kept), so a consumer that throttles what it
    sends -- the job runner publishes a few previews per second -- pays nothing for the steps it
    skips. The predicted x0 it shows is captured at the step, so reading it later is fine.
    """

    __slots__ = ("step", "total", "elapsed", "eta_seconds", "_preview", "_make_preview")

    def __init__(self, step: int, total: int, elapsed: float, eta_seconds: float,
                 preview: "Image.Image | Callable[[], Image.Image | None] | None" = None):
        self.step = step  # steps done, 1-based
        self.total = total  # model evaluations in the schedule (2 per step for second-order samplers)
        self.elapsed = elapsed  # seconds since the job started
        self.eta_seconds = eta_seconds  # estimated seconds until the last step
        self._make_preview = preview if callable(preview) else None
        self._preview = None if callable(preview) else preview

    @property
    def preview(self) -> Image.Image | None:
        """Predicted clean image: latent resolution (1/8 of the image for SD VAEs) unless the job
        set ``preview_size``; a grid when the job makes several images."""
        if self._make_preview is not None:
            self._preview, self._make_preview = self._make_preview(), None
        return self._preview

    def __repr__(self) -> str:
        return (f"StepProgress(step={self.step}, total={self.total}, elapsed={self.elapsed:.3f}, "
                f"eta_seconds={self.eta_seconds:.3f})")


class GenerationCancelled(Exception):
    """The cancel check returned true; the job stopped after ``step`` of ``total`` steps.

    ``result``: what the run had when it stopped (as A1111 returns on interrupt), or ``None``
    when it stopped before the first step. Its images are the current estimate of the clean
    image (x0) decoded by the VAE; its metadata records ``"interrupted": true``,
    ``"interrupted_at_step"`` and ``"total_steps"``.
    """

    def __init__(self, step: int, total: int, result: "GenerationResult | None" = None):
        self.step = step
        self.total = total
        self.result = result
        super().__init__(f"cancelled after step {step} of {total}")


@dataclass
class GenerationResult:
    """What a run made. ``metadata`` and ``timings`` are strict JSON by construction (see
    :func:`json_safe`): ``json.dumps(..., allow_nan=False)`` takes them, and so does a database's
    JSON check."""

    images: list[Image.Image]
    seeds: list[int]
    clip_scores: list[float] | None
    metadata: list[dict[str, Any]]  # one per image
    parameters: list[str]  # one A1111 infotext per image
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        # The one place where the engine's metadata becomes JSON: every record passes here.
        self.metadata = [json_safe(record) for record in self.metadata]
        self.timings = json_safe(self.timings)


def library_versions() -> dict[str, str]:
    import diffusers
    import transformers

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "engine": ENGINE_VERSION,
    }
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    return versions


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON data: what ``json.dumps(value, allow_nan=False)`` accepts.

    Scheduler configs hold tuples, numpy scalars and arrays, and non-finite floats (diffusers'
    ``DPMSolverMultistepScheduler`` has ``lambda_min_clipped = -inf``, which Python's json would
    write as ``-Infinity``: not JSON, and SQLite's JSON_VALID check refuses the row). So:

    - a non-finite float becomes the string ``float()`` reads back: ``"inf"``, ``"-inf"``,
      ``"nan"``. A string rather than null, so that ``"lambda_min_clipped": "-inf"`` still says
      "no clipping" and ``float(value)`` restores it;
    - numpy and torch scalars and arrays become Python numbers and (nested) lists (``tolist``);
      tuples and sets become lists; mappings dicts, their keys strings (JSON's own spelling for
      non-string keys: ``1`` -> ``"1"``, ``None`` -> ``"null"``);
    - anything else (a dtype, a path) becomes its ``str``.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, also for str subclasses (enums)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))  # 'inf', '-inf', 'nan'
    if isinstance(value, Mapping):
        return {_json_key(key): json_safe(item) for key, item in value.items()}
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        plain = value.tolist()
        return json_safe(plain) if plain is not value else str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(item) for item in value]
    return str(value)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    safe = json_safe(key)
    return safe if isinstance(safe, str) else json.dumps(safe)


# The top noise level of Stable Diffusion's own schedule (scaled-linear betas 0.00085-0.012 at
# t = 999: 14.61). Only a zero-terminal-SNR schedule goes above it (the built-in model's reaches
# sigma 4096): up there the x0 estimate is little more than the data mean and CLIP guidance's
# x0 - sigma^2 * gradient update explodes. With Karras sigmas, which spend most of their steps up
# there on such a schedule, guided images of the built-in model scored a CLIP score of 26 instead
# of 68. So the guidance window is laid over the steps at or below this level only.
MAX_GUIDED_SIGMA = 14.62


def guided_step_indices(request: GenerationRequest, noise_levels: Sequence[float]) -> list[int]:
    """Loop indices that get CLIP guidance, given each step's noise level (sigma): every
    ``clip_guidance_every``-th step inside the window [start, end) of the steps at or below
    ``MAX_GUIDED_SIGMA`` (on Stable Diffusion's own schedules: all of them), counted from the
    first step of the window."""
    eligible = [i for i, sigma in enumerate(noise_levels) if sigma <= MAX_GUIDED_SIGMA]
    total = len(eligible)
    if not request.clip_guidance or total == 0:
        return []
    first = math.ceil(request.clip_guidance_start * total)
    return [eligible[j] for j in range(first, total)
            if j / total < request.clip_guidance_end and (j - first) % request.clip_guidance_every == 0]


def step_noise_levels(scheduler) -> list[float]:
    """Sigma (k-diffusion units) of each model evaluation of a scheduler after ``set_timesteps``."""
    timesteps = scheduler.timesteps
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) == len(timesteps) + 1:
        return [float(sigma) for sigma in sigmas[:-1]]
    return [_sigma_at(scheduler, timestep) for timestep in timesteps]


def _sigma_at(scheduler, timestep) -> float:
    """Sigma of a training timestep, from the scheduler's alphas_cumprod."""
    alphas = scheduler.alphas_cumprod
    alpha_bar = float(alphas[min(max(int(round(float(timestep))), 0), len(alphas) - 1)])
    return math.sqrt((1 - alpha_bar) / alpha_bar)


def _noise_level(scheduler, timestep) -> tuple[float, bool]:
    """(sigma in k-diffusion units, whether ``sample`` is in sigma/VE scaling) for the model
    evaluation about to be stepped. Called before ``scheduler.step``."""
    variance_exploding = float(scheduler.init_noise_sigma) > 1.0 + 1e-6
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and hasattr(scheduler, "step_index"):
        if scheduler.step_index is None and hasattr(scheduler, "_init_step_index"):
            scheduler._init_step_index(timestep)  # exactly what step() would do first
        index = scheduler.step_index
        if index is not None and index < len(sigmas):
            return float(sigmas[index]), variance_exploding
    return _sigma_at(scheduler, timestep), variance_exploding


def predict_x0(model_output: torch.Tensor, sample: torch.Tensor, sigma: float, variance_exploding: bool,
               prediction_type: str) -> torch.Tensor:
    """Clean latents implied by a model output (Karras et al. 2022 / DDPM parameterisations)."""
    output, sample = model_output.float(), sample.float()
    scale = math.sqrt(1.0 + sigma * sigma)
    if prediction_type == "epsilon":
        return sample - sigma * output if variance_exploding else sample * scale - sigma * output
    if prediction_type == "v_prediction":
        vp_sample = sample / scale if variance_exploding else sample
        return (vp_sample - sigma * output) / scale
    return output  # "sample"


class _StepObserver:
    """Wraps one job's ``scheduler.step``: remembers what the preview needs, applies CLIP guidance."""

    def __init__(self, scheduler, *, track: bool, guidance: "_ClipGuidance | None"):
        self.scheduler = scheduler
        self.original_step = scheduler.step
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        self.track = track or guidance is not None
        self.guidance = guidance
        self.calls = 0
        self.last: tuple | None = None
        self.guidance_seconds = 0.0
        self.bookkeeping_seconds = 0.0  # the wrapper's own time, guidance excluded
        if self.track:
            # An instance attribute shadows the class method for this job's scheduler only. The
            # pipeline inspects step()'s signature to decide whether to pass eta and generator,
            # so the wrapper must present the original signature (inspect follows __wrapped__).
            step = functools.partial(_StepObserver.step, self)
            functools.update_wrapper(step, self.original_step)
            scheduler.step = step

    def step(self, model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
        entered = time.perf_counter()
        index = self.calls
        self.calls += 1
        sigma, variance_exploding = _noise_level(self.scheduler, timestep)
        if self.guidance is not None and self.guidance.applies(index, self.scheduler):
            started = time.perf_counter()
            x0 = predict_x0(model_output, sample, sigma, variance_exploding, self.prediction_type)
            gradient = self.guidance.gradient(x0)
            model_output = guided_model_output(model_output, gradient, sigma, self.prediction_type)
            self.guidance_seconds += time.perf_counter() - started
        before_step = time.perf_counter()
        output = self.original_step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        after_step = time.perf_counter()
        self.last = (model_output, sample, sigma, variance_exploding,
                     getattr(output, "pred_original_sample", None))
        result = output if return_dict else output.to_tuple()
        self.bookkeeping_seconds += (before_step - entered) + (time.perf_counter() - after_step)
        return result

    def x0(self, last: tuple | None = None) -> torch.Tensor | None:
        """Predicted clean latents of the step recorded in ``last`` (default: the latest step)."""
        last = last if last is not None else self.last
        if last is None:
            return None
        model_output, sample, sigma, variance_exploding, pred_original = last
        if pred_original is not None:
            return pred_original
        return predict_x0(model_output, sample, sigma, variance_exploding, self.prediction_type)


class _ClipGuidance:
    def __init__(self, model: LoadedModel, request: GenerationRequest, prompt: str | None = None):
        self.model = model
        self.request = request
        # the words only: A1111's attention syntax is for the text encoder, not CLIP
        words = plain_text(prompt if prompt is not None else request.prompt)
        self.text_embedding = model.clip.text_embeddings([words])
        # Cutout positions come from per-image generators (seed + k, like the noise), so a guided
        # image also reproduces on its own.
        self.generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.seeds]
        self.pipe = None  # the pipeline this pass runs in (set by _make_pass): how many steps it runs
        self.indices: list[int] | None = None
        self.done: list[int] = []

    def applies(self, index: int, scheduler) -> bool:
        if self.indices is None:
            levels = step_noise_levels(scheduler)
            # img2img, inpainting and the hires pass start the schedule part-way (the pipeline's
            # begin index): the window is laid over the steps this run takes, its last ones.
            run = getattr(self.pipe, "_num_timesteps", None) or len(levels)
            self.indices = guided_step_indices(self.request, levels[max(len(levels) - run, 0):])
        if index in self.indices:
            self.done.append(index)
            return True
        return False

    def gradient(self, x0: torch.Tensor) -> torch.Tensor:
        return clip_guidance_gradient(self.model.pipeline.vae, self.model.clip, x0, self.text_embedding,
                                      scale=self.request.clip_guidance_scale, cutouts=self.request.clip_cutouts,
                                      generators=self.generators)


def job_pipeline(pipeline, scheduler, unet=None, pipeline_class=None):
    """A new pipeline object over the same weights with this job's scheduler (cheap: no copies).

    ``unet``: this job's stand-in for the UNet (an :class:`AutoguidedUNet` over the same weights).
    ``pipeline_class``: another pipeline over the same modules -- the img2img or inpainting form
    of a text-to-image pipeline -- made as diffusers' ``from_pipe`` makes it (the modules and
    config values the class takes), without ``from_pipe``'s closing ``.to(dtype)``: that call
    moves every shared module of the resident model (in place, warning about it on every job)
    and, with an SDXL VAE upcast to fp32 for decoding in another job, would cast it back under
    that job's feet.
    """
    cls = pipeline_class or type(pipeline)
    modules, optional = cls._get_signature_keys(cls)
    components = {name: module for name, module in pipeline.components.items() if name in modules}
    components["scheduler"] = scheduler
    if unet is not None:
        components["unet"] = unet
    parameters = {name: value for name, value in pipeline.config.items()
                  if name in optional and not name.startswith("_")}
    job = cls(**components, **parameters)
    job.set_progress_bar_config(disable=True)
    return job


# The image-to-image pipelines of each text-to-image pipeline ldmsite loads.
SOURCE_PIPELINES = {
    "StableDiffusionPipeline": {"img2img": StableDiffusionImg2ImgPipeline, "inpaint": StableDiffusionInpaintPipeline},
    "StableDiffusionXLPipeline": {"img2img": StableDiffusionXLImg2ImgPipeline,
                                  "inpaint": StableDiffusionXLInpaintPipeline},
}


def source_pipeline(model: LoadedModel, kind: str, scheduler, unet=None):
    """This job's img2img (``kind`` "img2img") or inpainting ("inpaint") pipeline over the loaded
    model's modules (``from_pipe``'s way: see :func:`job_pipeline`), with this job's scheduler and,
    with autoguidance, its UNet stand-in."""
    return job_pipeline(model.pipeline, scheduler, unet, SOURCE_PIPELINES[model.pipeline_class][kind])


def _encode_once_per_image(pipe) -> None:
    """Encode a single source once per image, each with that image's generator.

    The inpainting pipelines encode one source image with the first generator only (img2img's
    already encodes it per generator); then image 0 of a batch draws its noise after that sample
    and the others do not, and image k of a batch would differ from the job of seed + k. A batch
    of one is untouched (plain diffusers, bit for bit)."""
    encode = pipe._encode_vae_image

    def encode_per_image(image, generator):
        if isinstance(generator, list) and len(generator) > 1 and image.shape[0] == 1:
            image = image.repeat(len(generator), 1, 1, 1)
        return encode(image=image, generator=generator)

    pipe._encode_vae_image = encode_per_image


def _fill_latents(pipe, fill: int, latent_mask: torch.Tensor, seeds: list[int]) -> None:
    """A1111's "latent noise" (``fill`` 2: unit Gaussian noise from seed + k) and "latent nothing"
    (3: zeros) in the masked part of the encoded source, before the pipeline noises it to the
    first step's level; the 4-channel blend then keeps them too. Wraps this job pipeline's
    ``prepare_latents``. At full strength the start is pure noise anyway and nothing changes."""
    prepare = pipe.prepare_latents
    signature = inspect.signature(prepare)

    def prepare_latents(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        if arguments.get("is_strength_max", True) or arguments.get("latents") is not None \
                or not arguments.get("add_noise", True):
            return prepare(*args, **kwargs)
        wanted_noise, wanted_image = arguments["return_noise"], arguments["return_image_latents"]
        arguments["return_noise"] = arguments["return_image_latents"] = True
        _, noise, image_latents = prepare(*bound.args, **bound.kwargs)
        mask = latent_mask.to(device=image_latents.device, dtype=image_latents.dtype)
        if fill == 2:
            filler = torch.stack([torch.randn(image_latents.shape[1:], generator=torch.Generator("cpu").manual_seed(s))
                                  for s in seeds]).to(device=image_latents.device, dtype=image_latents.dtype)
        else:
            filler = torch.zeros_like(image_latents)
        image_latents = image_latents * (1 - mask) + filler * mask
        latents = pipe.scheduler.add_noise(image_latents, noise, arguments["timestep"])
        outputs = (latents,)
        if wanted_noise:
            outputs += (noise,)
        if wanted_image:
            outputs += (image_latents,)
        return outputs

    pipe.prepare_latents = prepare_latents


def _latent_mask(pipe, mask: Image.Image, width: int, height: int, padding: int | None) -> torch.Tensor:
    """The mask at latent resolution, exactly as the inpainting pipeline makes it (same crop,
    same binarisation, same interpolation)."""
    crops = pipe.mask_processor.get_crop_region(mask, width, height, pad=padding) if padding is not None else None
    processed = pipe.mask_processor.preprocess(mask, height=height, width=width,
                                               resize_mode="fill" if crops else "default", crops_coords=crops)
    factor = pipe.vae_scale_factor
    return torch.nn.functional.interpolate(processed, size=(height // factor, width // factor))


# How far up a strength-based schedule may search for a start at the right noise level (see
# strength_schedule): 40x the steps asked for, and never more than the training timesteps.
MAX_SCHEDULE_STRETCH = 40


def _step_sigmas(scheduler) -> list[float]:
    """Noise level at the start of each step (not each model evaluation) of a scheduler after
    ``set_timesteps``."""
    levels = step_noise_levels(scheduler)
    return levels[::scheduler.order]


def strength_schedule(sampler: str, scheduler_config: Mapping[str, Any], steps: int,
                      strength: float) -> tuple[int, float]:
    """See :func:`_strength_schedule`; remembered, since building schedules of up to 40x the steps
    takes tens of milliseconds and the same few requests come back."""
    key = (sampler, json.dumps(json_safe(scheduler_config), sort_keys=True), steps, strength)
    if key not in _STRENGTH_SCHEDULES:
        if len(_STRENGTH_SCHEDULES) >= 256:
            _STRENGTH_SCHEDULES.clear()
        _STRENGTH_SCHEDULES[key] = _strength_schedule(sampler, scheduler_config, steps, strength)
    return _STRENGTH_SCHEDULES[key]


_STRENGTH_SCHEDULES: dict[tuple, tuple[int, float]] = {}


def _strength_schedule(sampler: str, scheduler_config: Mapping[str, Any], steps: int,
                       strength: float) -> tuple[int, float]:
    """(num_inference_steps, strength) to hand a diffusers img2img/inpaint pipeline so that
    ``strength`` means what it means on Stable Diffusion: start at the noise level of training
    timestep ``strength x T`` and run ``int(steps x strength)`` steps down from there.

    diffusers (and A1111) run the last ``int(steps x strength)`` steps of the sampler's
    ``steps``-step schedule. On SD's own schedules (top noise level 14.6) that tail starts near
    the noise level of ``strength x T`` for every spacing, so nothing changes there and the
    result stays plain diffusers'. On a zero-terminal-SNR schedule (the built-in model's reaches
    sigma 4096) Karras spacing puts most steps far above the data: strength 0.6 started at sigma
    288 instead of 2.6, the source was buried in noise, and img2img made the text-to-image
    picture of the same seed (measured: 2% kept the source's background, shape and place). There
    the same pipeline is asked for a longer schedule -- the fewest steps whose tail holds
    ``int(steps x strength)`` steps at or below that noise level -- and that tail: still the
    sampler's own spacing, the same number of steps, a start the source survives.
    """
    runs = min(int(steps * strength), steps)
    base = SAMPLERS[sampler].build(scheduler_config)
    base.set_timesteps(steps, device="cpu")
    levels = _step_sigmas(base)
    if runs < 1 or runs == steps or not levels or levels[0] <= MAX_GUIDED_SIGMA:  # SD's range: as diffusers
        return steps, strength
    train_steps = int(base.config.num_train_timesteps)
    target = _sigma_at(base, strength * train_steps - 1)
    if levels[steps - runs] <= target * 1.0001:
        return steps, strength  # the tail already starts low enough

    def enough(total: int) -> bool:
        scheduler = SAMPLERS[sampler].build(scheduler_config)
        scheduler.set_timesteps(total, device="cpu")
        sigmas = _step_sigmas(scheduler)
        return len(sigmas) >= runs and sigmas[len(sigmas) - runs] <= target * 1.0001

    low, high = steps, min(steps * MAX_SCHEDULE_STRETCH, train_steps)
    if not enough(high):
        return steps, strength
    while low + 1 < high:  # the fewest steps that are enough (more steps only lower the tail's start)
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    # int(high x stretched) must be exactly ``runs``: aim half a step above it.
    return high, (runs + 0.5) / high


def evaluations(sampler: str, scheduler_config: Mapping[str, Any], steps: int, strength: float = 1.0) -> int:
    """Model evaluations a pipeline runs for ``steps`` at ``strength`` (diffusers' rule: the last
    ``int(steps x strength)`` steps; second-order samplers evaluate twice a step)."""
    scheduler = SAMPLERS[sampler].build(scheduler_config)
    scheduler.set_timesteps(steps, device="cpu")
    start = max(steps - min(int(steps * strength), steps), 0)
    return len(scheduler.timesteps) - start * scheduler.order


def _resample(name: str):
    return {"Nearest": Image.NEAREST, "Bicubic": Image.BICUBIC}.get(name, Image.LANCZOS)  # "None", "Lanczos"


def hires_plan(request: GenerationRequest, factor: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """((width, height) to upscale to, (left, top, right, bottom) crop in latent pixels) of the
    hires fix, as A1111 does it: with both ``hr_resize_x`` and ``hr_resize_y`` of another aspect
    ratio, upscale to cover that size keeping the first pass's ratio, then crop the centre."""
    target_w, target_h = request.hr_size
    if not (request.hr_resize_x and request.hr_resize_y):
        return (target_w, target_h), (0, 0, target_w // factor, target_h // factor)
    width, height = request.width, request.height
    if width / height < target_w / target_h:
        up_w, up_h = target_w, target_w * height // width
    else:
        up_w, up_h = target_h * width // height, target_h
    latent_w, latent_h = up_w // factor, up_h // factor
    cut_x, cut_y = latent_w - target_w // factor, latent_h - target_h // factor
    return (latent_w * factor, latent_h * factor), (cut_x // 2, cut_y // 2, latent_w - (cut_x + 1) // 2,
                                                     latent_h - (cut_y + 1) // 2)


@dataclass
class _Clock:
    """When a job's phases happened (``time.perf_counter`` seconds) and what its hooks cost."""

    started: float
    call_started: float = 0.0  # the diffusers call began
    finished: float = 0.0  # it returned the images
    first_step_end: float | None = None
    last_step_end: float | None = None
    callbacks: float = 0.0  # all of callback_on_step_end
    caller: float = 0.0  # the caller's own callbacks (cancel check, progress), previews excluded
    preview: float = 0.0  # the previews that were looked at
    previews: int = 0


@dataclass
class _Job:
    """One run as :func:`prepare` sets it up: its (first) pass, and the hires pass when there is one."""

    scheduler: Any  # this job's own scheduler (never the model's)
    pipe: Any  # this job's pipeline object over the model's weights
    generators: list[torch.Generator]  # image k: seed + k
    guidance: _ClipGuidance | None
    preview: LatentPreview | None  # the projection, when someone watches progress
    observer: _StepObserver
    clock: _Clock
    interrupted: tuple[int, int] | None = None  # (step, total) where the cancel check stopped the run
    call: dict[str, Any] = field(default_factory=dict)  # the pipeline call's arguments besides the callback
    source: PreparedSource | None = None  # the fitted picture and mask (source modes)
    overlay: bool = False  # paste the result over the source through the mask (inpaint without crop)
    hires: "_Job | None" = None  # the hires fix's img2img pass
    evaluations: int = 0  # model evaluations this pass runs (progress total before the pass starts)
    done_before: int = 0  # evaluations of the passes before this one
    prompt_weighting: dict[str, Any] | None = None  # whether the prompts went as weighted embeddings (.prompts)
    kernels: str | None = None  # which Linear/Conv2d kernels ran (.invariance.kernels_name)


def generate(model: LoadedModel, request: GenerationRequest, *, source: SourceImages | None = None,
             on_progress: Callable[[StepProgress], None] | None = None,
             should_cancel: Callable[[], bool] | None = None,
             preview_size: int | None = None, loras: Mapping[str, Any] | None = None) -> GenerationResult:
    """Run ``request`` on ``model``.

    ``source``: the pictures of a source mode (img2img: ``init_image``; inpaint: ``init_image``
    and ``mask``, white = repaint; outpaint: ``init_image``), as the person gave them -- the
    engine fits, inverts, blurs and extends them as the request says; ``None`` for txt2img.
    ``on_progress`` is called after every step with a :class:`StepProgress` (its preview is
    computed when first read; with hires fix, ``total`` counts both passes). ``should_cancel``
    is consulted before the run and after every step; when it returns true the run stops right
    there and :class:`GenerationCancelled` is raised: before the first step with no result, after
    it with the images the run has so far (its ``result``: the current x0 estimate decoded, marked
    as interrupted). ``preview_size`` bounds the preview's longer side (``None``: latent
    resolution, e.g. 64x64 for a 512x512 SD image).

    ``loras``: the files of the LoRAs the request names (``request.loras``: name, weight), by
    name -- a ``.safetensors`` path, its bytes, a state dict or a :class:`~.lora.LoraFile`; a name
    without one is an ``UnsupportedRequest`` (``loras: ...``). They are applied for this job only
    (:func:`.lora.use_loras`: loaded once per model, the base model untouched after).

    ``ValueError`` (the message starts with the field) for what the model or the source cannot do.
    """
    clock = _Clock(started=time.perf_counter())
    check_inputs(model, request, source)
    use_invariant_kernels(model)
    lora_sources = resolve_loras(request.loras, loras) if request.loras else []
    if should_cancel is not None and should_cancel():
        raise GenerationCancelled(0, request.steps)
    # The adapters are set on the shared UNet and text encoder for the prompt encoding and the denoising.
    with use_loras(model, lora_sources) as applied:
        job = prepare(model, request, clock, watched=on_progress is not None,
                      cancellable=should_cancel is not None, source=source)
        job.kernels = kernels_name(model.device)
        images = run(job, request, on_progress=on_progress, should_cancel=should_cancel, preview_size=preview_size)
    result = describe(model, request, job, images, loras=applied)
    if job.interrupted is not None:
        raise GenerationCancelled(*job.interrupted, result=result)
    return result


def use_invariant_kernels(model: LoadedModel) -> None:
    """Give the model's layers batch-invariant kernels (on the CPU; once per model): a job run here
    alone and the same job inside a batch of other people's (:mod:`.batch`) are then the same
    computation, bit for bit (:mod:`.invariance`)."""
    pipeline = model.pipeline
    make_batch_invariant(pipeline.unet, pipeline.vae, getattr(pipeline, "text_encoder", None),
                         getattr(pipeline, "text_encoder_2", None), model.guide_unet)


def check_inputs(model: LoadedModel, request: GenerationRequest, source: SourceImages | None = None) -> None:
    """Refuse what the model cannot do (``ValueError``), even for a request validated against
    another model's limits, and a source that cannot serve the request's mode."""
    if request.clip_guidance and model.clip is None:
        raise UnsupportedRequest(f"clip_guidance_scale: model {model.name} has no CLIP model configured; CLIP guidance needs one")
    if request.autoguidance_scale > 0 and model.guide_unet is None:
        raise UnsupportedRequest(f"autoguidance_scale: model {model.name} has no guide UNet (guide_unet/); autoguidance needs one")
    check_source(request.mode, source)
    if request.has_source and model.pipeline_class not in SOURCE_PIPELINES:
        raise UnsupportedRequest(f"mode: model {model.name} is a {model.pipeline_class}; image to image needs a "
                         f"{' or '.join(SOURCE_PIPELINES)}")
    if model.pipeline.unet.config.in_channels != 4 and request.mode in ("txt2img", "img2img"):
        raise UnsupportedRequest(f"mode: model {model.name} is an inpainting model ({model.pipeline.unet.config.in_channels}-"
                         "channel UNet); use it with mode inpaint or outpaint")


def _make_pass(model: LoadedModel, request: GenerationRequest, clock: _Clock, *, kind: str, sampler: str,
               prompt: str, watched: bool, cancellable: bool) -> _Job:
    """A pass's scheduler, pipeline (``kind``: txt2img, img2img or inpaint), generators, CLIP
    guidance, preview projection and step observer."""
    scheduler = SAMPLERS[sampler].build(model.scheduler_config)
    unet = None
    if request.autoguidance_scale > 0:
        unet = AutoguidedUNet(model.pipeline.unet, model.guide_unet, request.autoguidance_scale,
                              request.guidance_scale)
    pipe = job_pipeline(model.pipeline, scheduler, unet) if kind == "txt2img" else \
        source_pipeline(model, kind, scheduler, unet)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.seeds]
    guidance = _ClipGuidance(model, request, prompt) if request.clip_guidance else None
    if guidance is not None:
        guidance.pipe = pipe
    preview = model.latent_preview() if watched else None
    observer = _StepObserver(scheduler, track=preview is not None or cancellable, guidance=guidance)
    return _Job(scheduler=scheduler, pipe=pipe, generators=generators, guidance=guidance, preview=preview,
                observer=observer, clock=clock)


def prepare(model: LoadedModel, request: GenerationRequest, clock: _Clock, *, watched: bool,
            cancellable: bool = False, source: SourceImages | None = None) -> _Job:
    """This job's scheduler, its pipeline object (with the autoguidance wrapper in place of the
    UNet when asked), the per-image generators, CLIP guidance and -- when someone ``watched``
    the steps -- the preview projection. The step observer keeps each step's x0 estimate when
    there is a preview to show or a run that may be interrupted (``cancellable``). Source modes
    get their fitted picture and mask; hires fix its second pass.

    Plain prompts are left to the pipeline's own ``__call__`` (SDXL's pooled and size
    conditioning included), which keeps the result exactly that of plain diffusers; prompts with
    A1111's attention syntax or ``BREAK``, or longer than one 77-token chunk, go to it as weighted
    embeddings (:func:`.prompts.prompt_arguments`).
    """
    kind = {"img2img": "img2img", "inpaint": "inpaint", "outpaint": "inpaint"}.get(request.mode, "txt2img")
    job = _make_pass(model, request, clock, kind=kind, sampler=request.sampler, prompt=request.prompt,
                     watched=watched, cancellable=cancellable)
    # A1111's attention syntax, BREAK and long prompts: weighted embeddings; plain prompts: the text
    prompts, job.prompt_weighting = prompt_arguments(job.pipe, request.prompt, request.negative_prompt or None)
    call: dict[str, Any] = dict(**prompts,
                                num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                                num_images_per_prompt=request.num_images, eta=request.eta, generator=job.generators)
    if kind == "txt2img":
        call.update(height=request.height, width=request.width)
    else:
        blur = getattr(job.pipe, "mask_processor", None)
        prepared = prepare_source(request, source, blur=blur.blur if blur is not None else None)
        job.source = prepared
        total, strength = strength_schedule(request.sampler, model.scheduler_config, request.steps,
                                            request.denoising_strength)
        call.update(image=prepared.image, strength=strength, num_inference_steps=total)
        if kind == "inpaint":
            width, height = prepared.image.size
            padding = request.inpaint_full_res_padding if request.inpaint_full_res else None
            if padding is not None and prepared.mask.getbbox() is None:
                padding = None  # nothing masked: no region to crop, the whole picture (as A1111)
            call.update(mask_image=prepared.mask, height=height, width=width)
            if padding is not None:
                call["padding_mask_crop"] = padding  # the pipeline crops, repaints and pastes back itself
            else:
                job.overlay = True
            _encode_once_per_image(job.pipe)
            if request.inpainting_fill in (2, 3):
                _fill_latents(job.pipe, request.inpainting_fill,
                              _latent_mask(job.pipe, prepared.mask, width, height, padding), request.seeds)
    job.call = call
    if request.mode == "txt2img" and request.enable_hr:
        hr_sampler = request.hr_sampler_name or request.sampler
        hr_steps = request.hr_second_pass_steps or request.steps
        hires = _make_pass(model, request, clock, kind="img2img", sampler=hr_sampler,
                           prompt=request.hr_prompt or request.prompt, watched=watched, cancellable=cancellable)
        hr_total, hr_strength = strength_schedule(hr_sampler, model.scheduler_config, hr_steps,
                                                  request.hr_denoising_strength)
        hr_prompts = (request.hr_prompt or request.prompt,
                      (request.hr_negative_prompt or request.negative_prompt) or None)
        if hr_prompts == (request.prompt, request.negative_prompt or None):
            hires.prompt_weighting = job.prompt_weighting  # the same text: the same arguments
        else:
            prompts, hires.prompt_weighting = prompt_arguments(hires.pipe, *hr_prompts)
        hires.call = dict(**prompts,
                          num_inference_steps=hr_total, guidance_scale=request.guidance_scale,
                          num_images_per_prompt=request.num_images, eta=request.eta, generator=hires.generators,
                          strength=hr_strength)
        hires.evaluations = evaluations(hr_sampler, model.scheduler_config, hr_total, hr_strength)
        job.hires = hires
    return job


def run(job: _Job, request: GenerationRequest, *, on_progress: Callable[[StepProgress], None] | None,
        should_cancel: Callable[[], bool] | None, preview_size: int | None) -> list[Image.Image]:
    """The denoising: the pipeline's own ``__call__``, with the cancel check and progress after
    every step (``callback_on_step_end``); returns the decoded images (after an interrupt, those
    of the last x0 estimate: ``job.interrupted`` says so). Hires fix: the first pass, the upscale,
    the img2img pass."""
    clock = job.clock
    hires = job.hires
    latent_hires = hires is not None and request.hr_upscaler in LATENT_UPSCALERS
    clock.call_started = time.perf_counter()
    output = job.pipe(**job.call, output_type="latent" if latent_hires else "pil",
                      callback_on_step_end=_step_end_callback(job, job, on_progress, should_cancel, preview_size))
    images = output.images
    if hires is not None and job.interrupted is None:
        hires.done_before = job.pipe.num_timesteps
        hires.call["image"] = upscale_first_pass(job.pipe, request, images)
        output = hires.pipe(**hires.call, output_type="pil",
                            callback_on_step_end=_step_end_callback(job, hires, on_progress, should_cancel,
                                                                    preview_size))
        images = output.images
    elif latent_hires:  # interrupted in the first pass: decode what it has
        images = decode_latents(job.pipe, images)
    images = list(images)
    if job.overlay:
        processor = job.pipe.image_processor
        images = [processor.apply_overlay(job.source.mask, job.source.original, image) for image in images]
    clock.finished = time.perf_counter()
    return images


def upscale_first_pass(pipe, request: GenerationRequest, images):
    """The hires fix's input: the first pass's latents interpolated (``F.interpolate`` in the
    Latent upscaler's mode, as A1111), or its images resampled with Pillow, at ``hr_size``."""
    factor = pipe.vae_scale_factor
    (width, height), (left, top, right, bottom) = hires_plan(request, factor)
    if request.hr_upscaler in LATENT_UPSCALERS:
        mode = LATENT_UPSCALERS[request.hr_upscaler]
        antialias = mode.endswith("-antialiased")
        mode = mode.removesuffix("-antialiased")
        # In fp32 (the antialiased modes have no bf16 kernel on the CPU); a no-op for fp32 models.
        latents = torch.nn.functional.interpolate(images.float(), size=(height // factor, width // factor), mode=mode,
                                                  antialias=antialias).to(images.dtype)
        return latents[:, :, top:bottom, left:right]
    resample = _resample(request.hr_upscaler)
    box = (left * factor, top * factor, right * factor, bottom * factor)
    return [image.resize((width, height), resample).crop(box) for image in images]


def decode_latents(pipe, latents: torch.Tensor) -> list[Image.Image]:
    """Latents of an SD/SDXL pipeline decoded to PIL images (as the pipeline's own decode does)."""
    vae = pipe.vae
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    latents = latents.to(dtype=vae.dtype)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    with torch.no_grad():
        image = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")


def _step_end_callback(top: _Job, job: _Job, on_progress: Callable[[StepProgress], None] | None,
                       should_cancel: Callable[[], bool] | None, preview_size: int | None):
    """The pipeline's ``callback_on_step_end``: cancel check, then progress with a lazy preview.
    ``top`` is the job (its clock and interrupt state), ``job`` the pass running (its observer)."""
    clock, observer = top.clock, job.observer

    def interrupt(pipeline, done, total, tensors):
        """Stop after this step and keep what the run has, as A1111 does: the pipeline's own
        interrupt flag skips the steps left, and the latents it then decodes (its own decode:
        VAE upcasting, latents mean and std) are the current x0 estimate."""
        if top.interrupted is not None or not hasattr(pipeline, "_interrupt"):
            raise GenerationCancelled(done, total)  # a pipeline that has no interrupt flag, or ignores it
        top.interrupted = (done, total)
        pipeline._interrupt = True
        latents = tensors["latents"]
        x0 = observer.x0()
        return {"latents": latents if x0 is None else x0.to(device=latents.device, dtype=latents.dtype)}

    def on_step_end(pipeline, index, timestep, tensors):
        now = time.perf_counter()
        try:
            return step_end(pipeline, index, now, tensors)
        finally:
            clock.callbacks += time.perf_counter() - now

    def total_evaluations(pipeline) -> int:
        total = job.done_before + pipeline.num_timesteps
        if job is top and top.hires is not None:
            total += top.hires.evaluations  # the second pass is still to come
        return total

    def step_end(pipeline, index, now, tensors):
        total = total_evaluations(pipeline)
        done = job.done_before + index + 1
        if clock.first_step_end is None:
            clock.first_step_end = now
        clock.last_step_end = now
        if should_cancel is not None:
            asked = time.perf_counter()
            cancel = should_cancel()
            clock.caller += time.perf_counter() - asked
            if cancel:
                return interrupt(pipeline, done, total, tensors)
        if on_progress is not None:
            last = observer.last
            latents = tensors["latents"]

            def make_preview():
                preview_started = time.perf_counter()
                x0 = observer.x0(last)
                image = latents_to_preview(job.preview, x0 if x0 is not None else latents, preview_size)
                clock.preview += time.perf_counter() - preview_started
                clock.previews += 1
                return image

            eta = (now - clock.call_started) / done * (total - done)
            handed_over = time.perf_counter()
            previews_before = clock.preview
            on_progress(StepProgress(step=done, total=total, elapsed=now - clock.started, eta_seconds=eta,
                                     preview=make_preview))
            # The caller's own work (publishing, database writes) is not engine time; the
            # previews it asked for are counted under "preview".
            clock.caller += time.perf_counter() - handed_over - (clock.preview - previews_before)
        return {}

    return on_step_end


def describe(model: LoadedModel, request: GenerationRequest, job: _Job, images: list[Image.Image],
             loras: Sequence[AppliedLora] = (), extra: Mapping[str, Any] | None = None) -> GenerationResult:
    """The result: CLIP scores, timings, one metadata record and one A1111 infotext per image
    (an interrupted run's records say ``"interrupted": true`` and the step it reached)."""
    clock = job.clock
    scores = None
    score_started = time.perf_counter()
    if model.clip is not None:
        scores = clip_scores(model.clip, images, plain_text(request.prompt))
    score_seconds = time.perf_counter() - score_started

    observers = [job.observer] + ([job.hires.observer] if job.hires is not None else [])
    last_step_end = clock.last_step_end or clock.finished
    timings = {
        "setup": round(clock.call_started - clock.started, 6),
        "denoise": round(last_step_end - clock.call_started, 6),  # includes the text encoder
        "decode": round(clock.finished - last_step_end, 6),  # VAE decode and conversion to PIL
        "preview": round(clock.preview, 6),  # all previews that were looked at
        "preview_count": clock.previews,
        "clip_guidance": round(sum(observer.guidance_seconds for observer in observers), 6),
        "clip_score": round(score_seconds, 6),
        # The engine's own work around the diffusers call: job setup, step hooks (cancel check,
        # progress, x0 bookkeeping), metadata. Not the caller's callbacks, previews or CLIP.
        "engine_overhead": (clock.call_started - clock.started) + clock.callbacks - clock.caller - clock.preview
        + sum(observer.bookkeeping_seconds for observer in observers),
        "total": 0.0,
    }
    wrapping_up = time.perf_counter()
    common = {
        "model": model.describe(),
        "scheduler": {"class": type(job.scheduler).__name__, "config": dict(job.scheduler.config)},
        "versions": library_versions(),
        **model.precision.to_dict(),
        "rng": "torch.Generator('cpu') per image, seeded seed + image_index",
        "torch_threads": torch.get_num_threads(),
        "timings": timings,
        "clip_guided_steps": list(job.guidance.done) if job.guidance else [],
        "preview_projection": job.preview.source if job.preview is not None else None,
        "pipeline_class": type(job.pipe).__name__,
        "kernels": job.kernels,  # batch-invariant on the CPU (.invariance)
        **(extra or {}),  # a batched run: its size (.batch)
        "prompt_weighting": job.prompt_weighting,
        "output_size": list(images[0].size) if images else list(request.output_size),
    }
    if loras:
        common["lora_files"] = [lora.to_dict() for lora in loras]  # name, weight, A1111 hash
    if job.source is not None:
        common["source"] = {"init_image_size": list(job.source.init_size),
                            "mask_size": list(job.source.mask_size) if job.source.mask_size else None,
                            "fitted_size": [request.width, request.height],
                            # what the pipeline was asked for (strength_schedule): plain diffusers with
                            # these reproduces the image
                            "diffusers_call": {"num_inference_steps": job.call["num_inference_steps"],
                                               "strength": job.call["strength"]}}
    if job.hires is not None:
        hires = job.hires
        common["hires"] = {"first_pass_size": [request.width, request.height], "size": list(request.hr_size),
                           "scheduler": {"class": type(hires.scheduler).__name__, "config": dict(hires.scheduler.config)},
                           "clip_guided_steps": list(hires.guidance.done) if hires.guidance else [],
                           "prompt_weighting": hires.prompt_weighting,
                           "diffusers_call": {"num_inference_steps": hires.call["num_inference_steps"],
                                              "strength": hires.call["strength"]},
                           "rng": "new torch.Generator('cpu') per image, seeded seed + image_index"}
    if job.interrupted is not None:
        common.update(interrupted=True, interrupted_at_step=job.interrupted[0], total_steps=job.interrupted[1])
    metadata, parameters = [], []
    fields = request.to_dict()
    for index, seed in enumerate(request.seeds):
        metadata.append({**fields, "seed": seed, "job_seed": request.seed, "image_index": index,
                         "clip_score": scores[index] if scores else None, **common})
        parameters.append(format_parameters(fields, seed=seed, model_name=model.name, model_hash=model.short_hash,
                                            extra={**({"Lora hashes": lora_hashes_text(loras)} if loras else {}),
                                                   "Version": f"ldmsite-engine {ENGINE_VERSION}"}))
    timings["engine_overhead"] = round(timings["engine_overhead"] + time.perf_counter() - wrapping_up, 6)
    timings["total"] = round(time.perf_counter() - clock.started, 6)  # the dict is shared by every metadata record
    return GenerationResult(images=images, seeds=request.seeds, clip_scores=scores, metadata=metadata,
                            parameters=parameters, timings=timings)
