"""Batching across people: several compatible requests as one denoising run (issue 28).

:func:`generate_batch` takes requests of different people and runs those that share a
:func:`batch_key` -- same size, steps, sampler, eta, and classifier-free guidance and
autoguidance both on or both off -- as ONE call of the pipeline, so each step is one UNet
evaluation over all their samples instead of one per job. What may differ inside a batch:
prompt and negative prompt, seed, number of images, guidance scale, autoguidance scale.

Every image is bit-identical to its request run alone through :func:`.engine.generate`
(tested on the built-in model and on tiny seeded components), because the batched run is the
alone run with more rows, element for element:

- the kernels: ``Linear`` and ``Conv2d`` are batch-invariant on the CPU (:mod:`.invariance`),
  and ``generate`` uses them too; attention, normalisation and elementwise ops work per sample;
- the prompts: each request's embeddings come from the pipeline's own ``encode_prompt`` with
  that request's text and image count -- what its ``__call__`` does for a job alone -- and go in
  as ``prompt_embeds``, concatenated;
- the noise: one CPU ``torch.Generator`` per image (seed + k), as alone: the pipeline draws the
  initial latents and the ancestral samplers their step noise sample by sample from that list;
- the guidance: classifier-free ``u + g (c - u)`` and autoguidance's ``c + (a/g)(c - b)`` are
  computed with each sample's own scale as the same Python float a job alone multiplies by
  (:class:`PerSampleScale`), so not even a float32-vs-float64 rounding of the scale differs;
- the scheduler: its arithmetic is elementwise, its noise levels are per step, not per sample.

Per job: progress (its own :class:`~.engine.StepProgress`, its preview from its own rows),
cancel (the job leaves the batch after the step where its check said so, with its partial result
as ``generate`` gives it: the x0 estimate decoded; its rows are taken out of the latents, the
prompt embeddings, the generators, the scales and the sampler's history, and the other rows are
untouched), and failure: a request the model cannot serve, or whose progress callback raises,
gets its error as its outcome and the others go on; a failure of the batched run as a whole
(out of memory, say) re-runs each unfinished request alone, so a job that fails fails alone.

Not batched (they run alone, one after the other, through ``generate``): image to image,
hires fix, CLIP guidance (its gradient is per job and costs more than the UNet), LoRAs (the
adapters are set on the shared UNet per job), samplers with a Brownian-tree noise sampler, and
models other than ``StableDiffusionPipeline`` (SDXL's extra conditioning is not batched yet).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch

from .autoguidance import AutoguidedUNet, uses_classifier_free_guidance
from .engine import (GenerationCancelled, GenerationResult, StepProgress, _Clock, _Job, _StepObserver,
                     check_inputs, decode_latents, describe, generate, job_pipeline, use_invariant_kernels)
from .invariance import kernels_name
from .loading import LoadedModel
from .lora import use_loras
from .preview import latents_to_preview
from .prompts import prompt_arguments
from .request import GenerationRequest
from .samplers import SAMPLERS

BATCHED_PIPELINES = ("StableDiffusionPipeline",)
# Brownian-tree noise is drawn for the whole batch tensor at once, not per generator.
UNBATCHED_SCHEDULERS = ("DPMSolverSDEScheduler",)

Outcome = GenerationResult | BaseException


def batch_key(request: GenerationRequest) -> tuple | None:
    """What two requests must share to run in one batch; ``None``: this request runs alone."""
    if request.mode != "txt2img" or request.enable_hr or request.clip_guidance or request.loras:
        return None
    if SAMPLERS[request.sampler].scheduler_class in UNBATCHED_SCHEDULERS:
        return None
    return ("txt2img", request.width, request.height, request.steps, request.sampler, request.eta,
            request.guidance_scale > 1, request.autoguidance_scale > 0)


class PerSampleScale:
    """A guidance scale per sample that multiplies a batch as each sample's own Python float.

    Stands where a pipeline (``self.guidance_scale * (c - u)``) or :class:`AutoguidedUNet`
    (``self.correction * (c - b)``) multiplies by a float: each run of equal values multiplies its
    rows by that float, exactly the operation a job alone does; one value: one multiplication."""

    def __init__(self, values: Sequence[float]):
        self.values = [float(value) for value in values]

    def keep(self, rows: Sequence[int]) -> None:
        self.values = [self.values[row] for row in rows]

    def __mul__(self, tensor: torch.Tensor) -> torch.Tensor:
        runs, start = [], 0
        for row in range(1, len(self.values) + 1):
            if row == len(self.values) or self.values[row] != self.values[start]:
                runs.append((self.values[start], start, row))
                start = row
        if len(runs) == 1:
            return tensor * runs[0][0]
        return torch.cat([tensor[first:stop] * value for value, first, stop in runs])

    __rmul__ = __mul__


@functools.cache
def _batched_pipeline_class(cls):
    """``cls`` whose ``guidance_scale`` is the batch's :class:`PerSampleScale` when one is set.

    The pipeline reads ``_guidance_scale`` (a float) to decide whether to run classifier-free
    guidance and ``guidance_scale`` where it multiplies; only the latter changes. Same name as
    ``cls``: image metadata records the pipeline class, and it is that pipeline's loop."""

    def guidance_scale(self):
        scale = getattr(self, "_sample_guidance", None)
        return scale if scale is not None else self._guidance_scale

    return type(cls.__name__, (cls,), {"guidance_scale": property(guidance_scale), "__module__": cls.__module__,
                                       "__doc__": cls.__doc__})


class _Member:
    """One request of a batched run: where its rows are, and how it ends."""

    def __init__(self, index: int, request: GenerationRequest, on_progress, should_cancel, started: float):
        self.index, self.request = index, request
        self.on_progress, self.should_cancel = on_progress, should_cancel
        self.clock = _Clock(started=started)
        self.left_at: tuple[int, int] | None = None  # (step, total) where it left the batch
        self.images = None
        self.error: BaseException | None = None
        self.prompt_weighting = None


def _slice_state(scheduler, batch: int, rows: list[int]) -> None:
    """Take ``rows`` of every per-sample tensor a sampler keeps between steps (multistep history,
    Heun's and DPM2's first-stage sample and derivative, LMS's derivatives): 4-d tensors whose first
    dimension is the batch's, alone or in lists."""
    index = torch.tensor(rows, dtype=torch.long)

    def cut(value):
        if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] == batch:
            return value.index_select(0, index.to(value.device))
        return value

    for name, value in list(vars(scheduler).items()):
        if isinstance(value, torch.Tensor):
            setattr(scheduler, name, cut(value))
        elif isinstance(value, list) and any(isinstance(item, torch.Tensor) for item in value):
            setattr(scheduler, name, [cut(item) for item in value])


def _run_batch(model: LoadedModel, members: list[_Member], preview_size: int | None) -> None:
    """One pipeline call over ``members`` (same batch key, at least two); fills each member's
    images or error and ``left_at``. Raises only for what fails the run as a whole."""
    first = members[0].request
    unet_config = model.pipeline.unet.config
    classifier_free = uses_classifier_free_guidance(unet_config, first.guidance_scale)
    scheduler = SAMPLERS[first.sampler].build(model.scheduler_config)
    samples = [member for member in members for _ in range(member.request.num_images)]
    unet = None
    if first.autoguidance_scale > 0:
        unet = AutoguidedUNet(model.pipeline.unet, model.guide_unet, first.autoguidance_scale, first.guidance_scale)
        # Each sample's correction as a job alone computes it (its own AutoguidedUNet's float).
        unet.correction = PerSampleScale([
            AutoguidedUNet(model.pipeline.unet, model.guide_unet, member.request.autoguidance_scale,
                           member.request.guidance_scale).correction for member in samples])
    pipe = job_pipeline(model.pipeline, scheduler, unet, _batched_pipeline_class(type(model.pipeline)))
    pipe._sample_guidance = PerSampleScale([member.request.guidance_scale for member in samples])
    generators = [torch.Generator("cpu").manual_seed(seed) for member in members for seed in member.request.seeds]
    watched = any(member.on_progress is not None for member in members)
    preview = model.latent_preview() if watched else None
    observer = _StepObserver(scheduler, track=True, guidance=None)
    device = pipe._execution_device

    positive, negative = [], []
    with torch.no_grad():
        for member in members:
            request = member.request
            prompts, member.prompt_weighting = prompt_arguments(pipe, request.prompt, request.negative_prompt or None)
            embeds, negative_embeds = pipe.encode_prompt(
                prompts.get("prompt"), device, request.num_images, classifier_free, prompts.get("negative_prompt"),
                prompt_embeds=prompts.get("prompt_embeds"), negative_prompt_embeds=prompts.get("negative_prompt_embeds"))
            positive.append(embeds)
            negative.append(negative_embeds)
    if len({tuple(embeds.shape[1:]) for embeds in positive + (negative if classifier_free else [])}) > 1:
        raise _Unbatchable("prompts of different lengths (weighted or longer than one chunk)")

    active = list(members)  # in row order
    shared = _Clock(started=members[0].clock.started)

    def rows_of(member) -> tuple[int, int]:
        start = 0
        for other in active:
            if other is member:
                return start, start + member.request.num_images
            start += other.request.num_images
        raise KeyError(member.index)

    def on_step_end(pipeline, index, timestep, tensors):
        now = time.perf_counter()
        if shared.first_step_end is None:
            shared.first_step_end = now
        shared.last_step_end = now
        done, total = index + 1, pipeline.num_timesteps
        last = observer.last
        batch = sum(member.request.num_images for member in active)
        leaving = []
        for member in list(active):
            start, stop = rows_of(member)
            clock = member.clock
            try:
                if member.should_cancel is not None:
                    asked = time.perf_counter()
                    cancel = member.should_cancel()
                    clock.caller += time.perf_counter() - asked
                    if cancel:
                        member.left_at = (done, total)
                        x0 = observer.x0(last)
                        member.images = decode_latents(pipeline, x0[start:stop].to(tensors["latents"].dtype))
                        leaving.append(member)
                        continue
                if member.on_progress is not None:
                    handed_over, previews_before = time.perf_counter(), clock.preview
                    member.on_progress(StepProgress(
                        step=done, total=total, elapsed=now - clock.started,
                        eta_seconds=(now - shared.call_started) / done * (total - done),
                        preview=functools.partial(_preview, observer, last, tensors["latents"], start, stop,
                                                  preview, preview_size, clock)))
                    # previews it asked for count under "preview", as in generate()
                    clock.caller += time.perf_counter() - handed_over - (clock.preview - previews_before)
            except Exception as error:  # this job's callback failed: it fails, the batch goes on
                member.error = error
                leaving.append(member)
        shared.callbacks += time.perf_counter() - now
        if not leaving:
            return {}
        finished = time.perf_counter()
        for member in leaving:
            member.clock.finished = finished
            member.clock.last_step_end = now
        keep = [row for member in active if member not in leaving for row in range(*rows_of(member))]
        active[:] = [member for member in active if member not in leaving]
        if not active:  # everybody left: the pipeline skips the steps left
            pipeline._interrupt = True
            return {}
        for lost in sorted({row for row in range(batch)} - set(keep), reverse=True):
            del generators[lost]  # the pipeline's step kwargs hold this very list
        pipe._sample_guidance.keep(keep)
        if unet is not None:
            unet.correction.keep(keep)
        _slice_state(scheduler, batch, keep)
        rows = torch.tensor(keep, dtype=torch.long)
        embeds = tensors["prompt_embeds"]
        embed_rows = torch.cat([rows, rows + batch]) if classifier_free else rows  # [negative; positive]
        return {"latents": tensors["latents"].index_select(0, rows.to(tensors["latents"].device)),
                "prompt_embeds": embeds.index_select(0, embed_rows.to(embeds.device))}

    call = dict(prompt_embeds=torch.cat(positive), negative_prompt_embeds=torch.cat(negative) if classifier_free else None,
                num_inference_steps=first.steps, guidance_scale=first.guidance_scale, num_images_per_prompt=1,
                eta=first.eta, generator=generators, height=first.height, width=first.width,
                callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    shared.call_started = time.perf_counter()
    output = pipe(**call, output_type="pil")
    shared.finished = time.perf_counter()
    images = list(output.images)
    if active:
        start = 0
        for member in active:
            member.images = images[start:start + member.request.num_images]
            start += member.request.num_images
    for member in members:  # what the batch shares, for each job's timings
        clock = member.clock
        clock.call_started = shared.call_started
        clock.first_step_end = shared.first_step_end
        if member.left_at is None and member.error is None:
            clock.finished, clock.last_step_end = shared.finished, shared.last_step_end
        clock.callbacks = shared.callbacks / len(members) + clock.caller + clock.preview
    member_jobs = {}
    for member in members:
        member_jobs[member.index] = _Job(
            scheduler=scheduler, pipe=pipe, generators=[], guidance=None, preview=preview, observer=observer,
            clock=member.clock, interrupted=member.left_at, prompt_weighting=member.prompt_weighting,
            kernels=kernels_name(model.device))
    return member_jobs


def _preview(observer, last, latents, start, stop, projection, preview_size, clock):
    """A member's preview: the x0 estimate of its own rows at that step."""
    made = time.perf_counter()
    x0 = observer.x0(last)
    image = latents_to_preview(projection, (x0 if x0 is not None else latents)[start:stop], preview_size)
    clock.preview += time.perf_counter() - made
    clock.previews += 1
    return image


class _Unbatchable(Exception):
    """These requests turned out not to fit one batch; they run alone (not an error of theirs)."""


def generate_batch(loaded: LoadedModel, requests: Sequence[GenerationRequest], *,
                   on_progress: Sequence[Callable[[StepProgress], None] | None] | None = None,
                   should_cancel: Sequence[Callable[[], bool] | None] | None = None,
                   loras: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
                   preview_size: int | None = None) -> list[Outcome]:
    """Run ``requests`` on ``loaded``, batching those that share a :func:`batch_key`; one outcome
    per request, in order: its :class:`~.engine.GenerationResult`, or the exception it ended
    with (:class:`~.engine.GenerationCancelled` with its partial result, as ``generate`` raises
    it; ``UnsupportedRequest``, ...). ``on_progress`` and ``should_cancel``: one callable (or
    ``None``) per request, called as ``generate`` calls them. ``loras``: one mapping of LoRA
    files for every request, or one per request (requests with LoRAs run alone).

    Exceptions that are not ``Exception`` (a worker's time limit, ``KeyboardInterrupt``) end the
    whole call."""
    count = len(requests)
    progress = list(on_progress) if on_progress is not None else [None] * count
    cancels = list(should_cancel) if should_cancel is not None else [None] * count
    files = list(loras) if isinstance(loras, (list, tuple)) else [loras] * count
    if not len(progress) == len(cancels) == len(files) == count:
        raise ValueError("on_progress, should_cancel and loras need one entry per request")
    outcomes: list[Outcome | None] = [None] * count

    def alone(index: int) -> None:
        try:
            outcomes[index] = generate(loaded, requests[index], on_progress=progress[index],
                                       should_cancel=cancels[index], loras=files[index], preview_size=preview_size)
        except Exception as error:
            outcomes[index] = error

    groups: dict[tuple, list[int]] = {}
    plan: list[tuple | int] = []  # in request order: a group's key at its first request, or a lone index
    batchable_model = loaded.pipeline_class in BATCHED_PIPELINES and loaded.pipeline.unet.config.get(
        "time_cond_proj_dim") is None
    for index, request in enumerate(requests):
        key = batch_key(request) if batchable_model else None
        if key is None:
            plan.append(index)
            continue
        if key not in groups:
            groups[key] = []
            plan.append(key)
        groups[key].append(index)

    for step in plan:
        if isinstance(step, int):
            alone(step)
            continue
        indices = groups[step]
        started = time.perf_counter()
        members = []
        for index in indices:
            try:
                check_inputs(loaded, requests[index])
                if cancels[index] is not None and cancels[index]():
                    raise GenerationCancelled(0, requests[index].steps)
            except Exception as error:
                outcomes[index] = error
                continue
            members.append(_Member(index, requests[index], progress[index], cancels[index], started))
        if len(members) == 1:
            alone(members[0].index)
            continue
        if not members:
            continue
        try:
            use_invariant_kernels(loaded)
            with use_loras(loaded, []):  # no adapter active, as for a plain job alone
                jobs = _run_batch(loaded, members, preview_size)
        except Exception:  # the run as a whole failed (or could not be batched): each job alone
            for member in members:
                if member.left_at is None and member.error is None:
                    alone(member.index)
                elif member.error is not None:
                    outcomes[member.index] = member.error
                else:
                    outcomes[member.index] = _outcome_of(loaded, member, None)
            continue
        for member in members:
            outcomes[member.index] = member.error if member.error is not None else \
                _outcome_of(loaded, member, jobs[member.index], batch={"requests": len(members),
                                                                       "samples": sum(m.request.num_images
                                                                                      for m in members)})
    return outcomes  # type: ignore[return-value]


def _outcome_of(loaded: LoadedModel, member: _Member, job: _Job | None, batch: dict | None = None) -> Outcome:
    """A member's result (or its cancellation, carrying the partial result)."""
    if job is None:  # left the batch before the batch failed: what it took with it
        return GenerationCancelled(*member.left_at) if member.left_at else RuntimeError("the batch failed")
    result = describe(loaded, member.request, job, member.images or [], extra={"batch": batch} if batch else None)
    if member.left_at is not None:
        return GenerationCancelled(*member.left_at, result=result)
    return result
