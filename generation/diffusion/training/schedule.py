"""The built-in model's noise schedule (zero terminal SNR, v-prediction) and the schedulers made from it."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

from generation.diffusion.samplers import build_scheduler
from generation.diffusion.training.presets import BUILTIN_SAMPLER


# The last alpha-bar of the zero-terminal-SNR schedule: exactly 0 leaves the
# sigma-based samplers (Euler, LMS, Heun, DPM2...) an infinite starting sigma,
# so it is clamped to the value diffusers' own zero-SNR option uses.
TERMINAL_ALPHA_BAR = 2.0**-24


def zero_terminal_snr_betas(num_train_timesteps: int = 1000) -> list[float]:
    """Stable Diffusion's scaled-linear betas rescaled so the last step is (almost) pure noise.

    With the stock schedule x_T keeps sqrt(alpha_bar_T) = 0.068 of the image;
    averaged over a 16x16 latent the noise is only 1/16 as strong, so the
    background colour stays readable in x_T and the model learns to copy it
    from the noise instead of reading the prompt (Lin et al., 2024, "Common
    Diffusion Noise Schedules and Sample Steps are Flawed"). Shipped as
    ``trained_betas`` so every sampler, not only those with a zero-SNR option,
    uses exactly this schedule.
    """
    base = torch.linspace(0.00085**0.5, 0.012**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    betas = rescale_zero_terminal_snr(base)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    betas[-1] = 1 - TERMINAL_ALPHA_BAR / alphas_cumprod[-2]
    return [float(b) for b in betas]


def noise_schedule(num_train_timesteps: int = 1000) -> dict[str, Any]:
    """The built-in model's noise schedule as scheduler config keys every sampler reads.

    v-prediction (Salimans & Ho, 2022) goes with the zero-terminal-SNR
    schedule: predicting the noise is meaningless where x_T is all noise. The
    timesteps are "trailing" so sampling starts at t = T, where training did.
    """
    return {
        "num_train_timesteps": num_train_timesteps,
        "trained_betas": zero_terminal_snr_betas(num_train_timesteps),
        "timestep_spacing": "trailing",
        "prediction_type": "v_prediction",
    }


def ddim_scheduler(num_train_timesteps: int = 1000):
    """The training schedule as a deterministic DDIM sampler (eta=0): noising in training, sample checks."""
    return DDIMScheduler(**noise_schedule(num_train_timesteps), clip_sample=False, set_alpha_to_one=False)


def sampling_scheduler(num_train_timesteps: int = 1000):
    """The exported model's default sampler (``presets.BUILTIN_SAMPLER``) on the training schedule,
    so a plain ``StableDiffusionPipeline.from_pretrained`` samples with ldmsite's default sampler."""
    return build_scheduler(BUILTIN_SAMPLER, noise_schedule(num_train_timesteps))
