"""Samplers by the names people know (AUTOMATIC1111 / ComfyUI), mapped to diffusers schedulers.

Each entry of :data:`SAMPLERS` builds a *fresh* scheduler from a pipeline's scheduler config, so
the model's own training schedule (betas, timestep spacing, prediction type, offsets) is kept
and only the solver changes -- the same way diffusers documents swapping schedulers
(``Scheduler.from_config(pipe.scheduler.config)``). A fresh scheduler per job also matters for
thread safety: schedulers carry per-run state (step index, multistep history).

The mapping follows the table in the diffusers docs ("A1111/k-diffusion -> diffusers"):
https://huggingface.co/docs/diffusers/api/schedulers/overview

This module imports diffusers lazily so that request validation (which needs only the names)
stays cheap for the web process.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class SamplerSpec:
    """How an A1111 sampler name maps onto a diffusers scheduler."""

    name: str
    scheduler_class: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    uses_eta: bool = False  # the scheduler's step() takes ``eta`` (DDIM); recorded only then
    stochastic: bool = False  # draws fresh noise every step (ancestral / SDE)
    aliases: tuple[str, ...] = ()

    def build(self, scheduler_config: Mapping[str, Any]):
        """A new diffusers scheduler of this kind, configured from ``scheduler_config``."""
        cls = scheduler_class(self.scheduler_class)
        overrides = dict(self.overrides)
        # The name decides the sigma spacing, as in A1111: "UniPC" is not UniPC Karras because a
        # model's own config (the built-in model's is Euler Karras) turned Karras sigmas on.
        if "use_karras_sigmas" in inspect.signature(cls.__init__).parameters:
            overrides.setdefault("use_karras_sigmas", False)
        scheduler = cls.from_config(dict(scheduler_config), **overrides)
        _start_at_the_first_step(scheduler)
        return scheduler

    __call__ = build


def scheduler_class(name: str):
    """The diffusers scheduler class ``name``; LMS comes from :mod:`.lms` when scipy is missing."""
    import diffusers

    cls = getattr(diffusers, name)
    if cls.__module__.startswith("diffusers.utils.dummy"):  # a placeholder for a missing backend
        if name == "LMSDiscreteScheduler":
            from .lms import LMSDiscreteScheduler

            return LMSDiscreteScheduler
        cls()  # raises diffusers' ImportError naming the missing package
    return cls


def _start_at_the_first_step(scheduler) -> None:
    """Make a fresh scheduler's first ``step()`` the first step of its schedule.

    Without a begin index, a scheduler finds where it starts by looking the first timestep up in
    its own list and takes the *second* match when there are two (meant for img2img). Karras
    sigmas on a zero-terminal-SNR schedule (the built-in model's) round several of the top sigmas
    to the same integer timestep, so DPM++ 2M Karras started one step late and indexed past its
    sigmas on the last step (IndexError; diffusers issue #12771, open). Text-to-image always
    starts at step 0; an img2img pipeline sets its own begin index after ``set_timesteps``, so
    it still wins.
    """
    if not hasattr(scheduler, "set_begin_index"):
        return
    set_timesteps = scheduler.set_timesteps

    @functools.wraps(set_timesteps)
    def set_timesteps_from_the_start(*args, **kwargs):
        set_timesteps(*args, **kwargs)
        scheduler.set_begin_index(0)

    scheduler.set_timesteps = set_timesteps_from_the_start


def _torchsde_available() -> bool:
    return importlib.util.find_spec("torchsde") is not None


_DPMPP = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_KARRAS = {"use_karras_sigmas": True}

_SPECS: list[SamplerSpec] = [
    SamplerSpec("Euler", "EulerDiscreteScheduler", {}, aliases=("k_euler", "euler")),
    # A1111 >= 1.9 spells it Euler + "Schedule type: Karras", ComfyUI euler + karras. The
    # built-in model's default: docs/MODEL.md has the comparison.
    SamplerSpec("Euler Karras", "EulerDiscreteScheduler", _KARRAS, aliases=("k_euler_karras", "euler_karras")),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", {}, stochastic=True,
                aliases=("k_euler_a", "k_euler_ancestral", "euler_ancestral", "euler_a")),
    # clip_sample clamps x0 to [-1, 1], right for pixel-space DDPMs and wrong for SD latents; a
    # config written for another scheduler (PNDM, Euler) lacks the key and DDIM defaults it on.
    SamplerSpec("DDIM", "DDIMScheduler", {"clip_sample": False}, uses_eta=True, aliases=("ddim",)),
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", _DPMPP, aliases=("k_dpmpp_2m", "dpmpp_2m")),
    SamplerSpec("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {**_DPMPP, **_KARRAS},
                aliases=("k_dpmpp_2m_karras", "dpmpp_2m_karras")),
    # The multistep SDE variant needs no torchsde: its noise comes from the job's generators.
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, stochastic=True,
                aliases=("k_dpmpp_2m_sde", "dpmpp_2m_sde")),
    SamplerSpec("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, **_KARRAS}, stochastic=True,
                aliases=("k_dpmpp_2m_sde_karras", "dpmpp_2m_sde_karras")),
    # DPM++ SDE Karras (DPMSolverSDEScheduler) is appended below only when torchsde is installed:
    # its Brownian-tree noise is implemented with torchsde, which is not in requirements.txt.
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, aliases=("unipc", "uni_pc")),
    # PLMS as A1111 and Stable Diffusion's own scheduler configs run it: without the Runge-Kutta
    # warm-up steps, which need at least 4 steps (diffusers' default, skip_prk_steps=False, failed
    # every job of fewer steps on a model whose config was written for another scheduler, e.g.
    # the built-in model's Euler config).
    SamplerSpec("PNDM", "PNDMScheduler", {"skip_prk_steps": True}, aliases=("plms", "PLMS", "pndm")),
    SamplerSpec("LMS", "LMSDiscreteScheduler", {}, aliases=("k_lms", "lms")),
    SamplerSpec("LMS Karras", "LMSDiscreteScheduler", _KARRAS, aliases=("k_lms_karras", "lms_karras")),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, aliases=("k_heun", "heun")),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, aliases=("k_dpm_2", "dpm2")),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, stochastic=True,
                aliases=("k_dpm_2_a", "k_dpm_2_ancestral", "dpm2_a")),
    SamplerSpec("DEIS", "DEISMultistepScheduler", {}, aliases=("deis",)),
]

#: True when "DPM++ SDE Karras" is offered (it needs the optional ``torchsde`` package).
DPMPP_SDE_AVAILABLE = _torchsde_available()
if DPMPP_SDE_AVAILABLE:  # pragma: no cover - torchsde is not pinned
    _SPECS.insert([spec.name for spec in _SPECS].index("DPM++ 2M SDE Karras") + 1,
                  SamplerSpec("DPM++ SDE Karras", "DPMSolverSDEScheduler", _KARRAS, stochastic=True,
                              aliases=("k_dpmpp_sde_karras", "dpmpp_sde_karras")))

#: Ordered mapping ``A1111 name -> spec``; a spec is callable: ``SAMPLERS[name](scheduler_config)``.
SAMPLERS: "OrderedDict[str, SamplerSpec]" = OrderedDict((spec.name, spec) for spec in _SPECS)

#: Every accepted spelling (lower-cased) -> canonical name. Includes the k-diffusion names the
#: A1111 API and old PNG metadata use (``k_euler_a``...) and A1111's ``PLMS`` for PNDM.
SAMPLER_ALIASES: dict[str, str] = {}
for _spec in _SPECS:
    SAMPLER_ALIASES[_spec.name.lower()] = _spec.name
    for _alias in _spec.aliases:
        SAMPLER_ALIASES[_alias.lower()] = _spec.name

#: Samplers with which CLIP guidance is tested to raise the CLIP score (the deterministic ones:
#: first-order, multistep and second-order). The ancestral/SDE samplers also accept the guided
#: noise prediction, but the fresh noise they add every step partly washes out the push.
CLIP_GUIDANCE_TESTED_SAMPLERS = ("Euler", "DDIM", "DPM++ 2M", "DPM++ 2M Karras", "UniPC", "PNDM", "LMS", "Heun")


def resolve_sampler(name: str) -> str:
    """Canonical sampler name for any accepted spelling; ``KeyError`` when unknown."""
    key = " ".join(str(name).split()).lower()
    if key in SAMPLER_ALIASES:
        return SAMPLER_ALIASES[key]
    raise KeyError(name)


def build_scheduler(sampler: str, scheduler_config: Mapping[str, Any]):
    """A fresh diffusers scheduler for ``sampler`` (any accepted spelling)."""
    return SAMPLERS[resolve_sampler(sampler)].build(scheduler_config)


SamplerBuilder = Callable[[Mapping[str, Any]], Any]
