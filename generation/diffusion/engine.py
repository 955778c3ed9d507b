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

Each job gets a fresh scheduler and a fresh pipeline object sharing the model's weights, so
worker threads can run jobs on one resident model concurrently. Image k uses seed + k through
its own CPU ``torch.Generator`` (a list of generators, one per image), which makes image k
independent of the batch size and of the device, as in ComfyUI's CPU noise.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from .autoguidance import AutoguidedUNet
from .clip import clip_guidance_gradient, clip_scores, guided_model_output
from .loading import LoadedModel
from .pngmeta import format_parameters
from .preview import LatentPreview, latents_to_preview
from .request import GenerationRequest
from .samplers import SAMPLERS

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
    def __init__(self, model: LoadedModel, request: GenerationRequest):
        self.model = model
        self.request = request
        self.text_embedding = model.clip.text_embeddings([request.prompt])
        # Cutout positions come from per-image generators (seed + k, like the noise), so a guided
        # image also reproduces on its own.
        self.generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.seeds]
        self.indices: list[int] | None = None
        self.done: list[int] = []

    def applies(self, index: int, scheduler) -> bool:
        if self.indices is None:
            self.indices = guided_step_indices(self.request, step_noise_levels(scheduler))
        if index in self.indices:
            self.done.append(index)
            return True
        return False

    def gradient(self, x0: torch.Tensor) -> torch.Tensor:
        return clip_guidance_gradient(self.model.pipeline.vae, self.model.clip, x0, self.text_embedding,
                                      scale=self.request.clip_guidance_scale, cutouts=self.request.clip_cutouts,
                                      generators=self.generators)


def job_pipeline(pipeline, scheduler, unet=None):
    """A new pipeline object over the same weights with this job's scheduler (cheap: no copies).

    ``unet``: this job's stand-in for the UNet (an :class:`AutoguidedUNet` over the same weights).
    """
    components = dict(pipeline.components)
    components["scheduler"] = scheduler
    if unet is not None:
        components["unet"] = unet
    job = type(pipeline)(**components, **pipeline.parameters)
    job.set_progress_bar_config(disable=True)
    return job


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
    """One run as :func:`prepare` sets it up."""

    scheduler: Any  # this job's own scheduler (never the model's)
    pipe: Any  # this job's pipeline object over the model's weights
    generators: list[torch.Generator]  # image k: seed + k
    guidance: _ClipGuidance | None
    preview: LatentPreview | None  # the projection, when someone watches progress
    observer: _StepObserver
    clock: _Clock
    interrupted: tuple[int, int] | None = None  # (step, total) where the cancel check stopped the run


def generate(model: LoadedModel, request: GenerationRequest, *,
             on_progress: Callable[[StepProgress], None] | None = None,
             should_cancel: Callable[[], bool] | None = None,
             preview_size: int | None = None) -> GenerationResult:
    """Run ``request`` on ``model``.

    ``on_progress`` is called after every step with a :class:`StepProgress` (its preview is
    computed when first read). ``should_cancel`` is consulted before the run and
    after every step; when it returns true the run stops right there and
    :class:`GenerationCancelled` is raised: before the first step with no result, after it with
    the images the run has so far (its ``result``: the current x0 estimate decoded, marked as
    interrupted). ``preview_size`` bounds the preview's longer side
    (``None``: latent resolution, e.g. 64x64 for a 512x512 SD image).
    """
    clock = _Clock(started=time.perf_counter())
    check_inputs(model, request)
    if should_cancel is not None and should_cancel():
        raise GenerationCancelled(0, request.steps)
    job = prepare(model, request, clock, watched=on_progress is not None, cancellable=should_cancel is not None)
    images = run(job, request, on_progress=on_progress, should_cancel=should_cancel, preview_size=preview_size)
    result = describe(model, request, job, images)
    if job.interrupted is not None:
        raise GenerationCancelled(*job.interrupted, result=result)
    return result


def check_inputs(model: LoadedModel, request: GenerationRequest) -> None:
    """Refuse what the model cannot do (``ValueError``), even for a request validated against
    another model's limits."""
    if request.clip_guidance and model.clip is None:
        raise ValueError(f"model {model.name} has no CLIP model configured; CLIP guidance needs one")
    if request.autoguidance_scale > 0 and model.guide_unet is None:
        raise ValueError(f"model {model.name} has no guide UNet (guide_unet/); autoguidance needs one")


def prepare(model: LoadedModel, request: GenerationRequest, clock: _Clock, *, watched: bool,
            cancellable: bool = False) -> _Job:
    """This job's scheduler, its pipeline object (with the autoguidance wrapper in place of the
    UNet when asked), the per-image generators, CLIP guidance and -- when someone ``watched``
    the steps -- the preview projection. The step observer keeps each step's x0 estimate when
    there is a preview to show or a run that may be interrupted (``cancellable``).

    Prompt embeddings are left to the pipeline's own ``__call__`` (SDXL's pooled and size
    conditioning included), which keeps the result exactly that of plain diffusers.
    """
    scheduler = SAMPLERS[request.sampler].build(model.scheduler_config)
    unet = None
    if request.autoguidance_scale > 0:
        unet = AutoguidedUNet(model.pipeline.unet, model.guide_unet, request.autoguidance_scale,
                              request.guidance_scale)
    pipe = job_pipeline(model.pipeline, scheduler, unet)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.seeds]
    guidance = _ClipGuidance(model, request) if request.clip_guidance else None
    preview = model.latent_preview() if watched else None
    observer = _StepObserver(scheduler, track=preview is not None or cancellable, guidance=guidance)
    return _Job(scheduler=scheduler, pipe=pipe, generators=generators, guidance=guidance, preview=preview,
                observer=observer, clock=clock)


def run(job: _Job, request: GenerationRequest, *, on_progress: Callable[[StepProgress], None] | None,
        should_cancel: Callable[[], bool] | None, preview_size: int | None) -> list[Image.Image]:
    """The denoising: the pipeline's own ``__call__``, with the cancel check and progress after
    every step (``callback_on_step_end``); returns the decoded images (after an interrupt, those
    of the last x0 estimate: ``job.interrupted`` says so)."""
    clock = job.clock
    step_end = _step_end_callback(job, on_progress, should_cancel, preview_size)
    clock.call_started = time.perf_counter()
    output = job.pipe(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or None,
        height=request.height,
        width=request.width,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        num_images_per_prompt=request.num_images,
        eta=request.eta,
        generator=job.generators,
        output_type="pil",
        callback_on_step_end=step_end,
    )
    clock.finished = time.perf_counter()
    return list(output.images)


def _step_end_callback(job: _Job, on_progress: Callable[[StepProgress], None] | None,
                       should_cancel: Callable[[], bool] | None, preview_size: int | None):
    """The pipeline's ``callback_on_step_end``: cancel check, then progress with a lazy preview."""
    clock, observer = job.clock, job.observer

    def interrupt(pipeline, done, total, tensors):
        """Stop after this step and keep what the run has, as A1111 does: the pipeline's own
        interrupt flag skips the steps left, and the latents it then decodes (its own decode:
        VAE upcasting, latents mean and std) are the current x0 estimate."""
        if job.interrupted is not None or not hasattr(pipeline, "_interrupt"):
            raise GenerationCancelled(done, total)  # a pipeline that has no interrupt flag, or ignores it
        job.interrupted = (done, total)
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

    def step_end(pipeline, index, now, tensors):
        total = pipeline.num_timesteps
        if clock.first_step_end is None:
            clock.first_step_end = now
        clock.last_step_end = now
        if should_cancel is not None:
            asked = time.perf_counter()
            cancel = should_cancel()
            clock.caller += time.perf_counter() - asked
            if cancel:
                return interrupt(pipeline, index + 1, total, tensors)
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

            done = index + 1
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


def describe(model: LoadedModel, request: GenerationRequest, job: _Job, images: list[Image.Image]) -> GenerationResult:
    """The result: CLIP scores, timings, one metadata record and one A1111 infotext per image
    (an interrupted run's records say ``"interrupted": true`` and the step it reached)."""
    clock = job.clock
    scores = None
    score_started = time.perf_counter()
    if model.clip is not None:
        scores = clip_scores(model.clip, images, request.prompt)
    score_seconds = time.perf_counter() - score_started

    last_step_end = clock.last_step_end or clock.finished
    timings = {
        "setup": round(clock.call_started - clock.started, 6),
        "denoise": round(last_step_end - clock.call_started, 6),  # includes the text encoder
        "decode": round(clock.finished - last_step_end, 6),  # VAE decode and conversion to PIL
        "preview": round(clock.preview, 6),  # all previews that were looked at
        "preview_count": clock.previews,
        "clip_guidance": round(job.observer.guidance_seconds, 6),
        "clip_score": round(score_seconds, 6),
        # The engine's own work around the diffusers call: job setup, step hooks (cancel check,
        # progress, x0 bookkeeping), metadata. Not the caller's callbacks, previews or CLIP.
        "engine_overhead": (clock.call_started - clock.started) + clock.callbacks - clock.caller - clock.preview
        + job.observer.bookkeeping_seconds,
        "total": 0.0,
    }
    wrapping_up = time.perf_counter()
    common = {
        "model": model.describe(),
        "scheduler": {"class": type(job.scheduler).__name__, "config": dict(job.scheduler.config)},
        "versions": library_versions(),
        **model.precision.to_dict(),
        "rng": "torch.Generator('cpu') per image, seeded seed + image_index",
        "timings": timings,
        "clip_guided_steps": list(job.guidance.done) if job.guidance else [],
        "preview_projection": job.preview.source if job.preview is not None else None,
    }
    if job.interrupted is not None:
        common.update(interrupted=True, interrupted_at_step=job.interrupted[0], total_steps=job.interrupted[1])
    metadata, parameters = [], []
    fields = request.to_dict()
    for index, seed in enumerate(request.seeds):
        metadata.append({**fields, "seed": seed, "job_seed": request.seed, "image_index": index,
                         "clip_score": scores[index] if scores else None, **common})
        parameters.append(format_parameters(fields, seed=seed, model_name=model.name, model_hash=model.short_hash,
                                            extra={"Version": f"ldmsite-engine {ENGINE_VERSION}"}))
    timings["engine_overhead"] = round(timings["engine_overhead"] + time.perf_counter() - wrapping_up, 6)
    timings["total"] = round(time.perf_counter() - clock.started, 6)  # the dict is shared by every metadata record
    return GenerationResult(images=images, seeds=request.seeds, clip_scores=scores, metadata=metadata,
                            parameters=parameters, timings=timings)
