"""Autoguidance: steer a model away from a weaker version of itself.

Karras et al., "Guiding a Diffusion Model with a Bad Version of Itself" (NeurIPS 2024): where
classifier-free guidance extrapolates from the unconditional prediction towards the conditional
one, autoguidance extrapolates from a *guide* model -- the same network, less trained -- towards
the main model, with both given the same prompt. The two make the same kind of mistakes, the
guide more of them, so the difference points away from those mistakes. For ldmsite's built-in
model the guide is its UNet before the last training phase, and the mistake corrected is the
rounding of a square's corners at low noise (``generation/builtin_model/README.md``).

Combined with classifier-free guidance (scale ``g``, unconditional prediction ``u``,
conditional ``c``, the guide's conditional ``b``), the prediction a step uses is

    u + g (c - u) + a (c - b)

with ``a`` the autoguidance scale (0: off; Karras et al.'s weight is ``w = 1 + a`` when ``g = 1``).
:class:`AutoguidedUNet` wraps the UNet so any stock diffusers pipeline produces it: the pipeline
still forms ``u + g (c' - u)`` itself, from ``c' = c + (a / g)(c - b)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

GUIDE_UNET_SUBFOLDER = "guide_unet"


def guide_unet_path(model_dir: str | Path) -> Path | None:
    """The model directory's guide UNet folder, when it has one."""
    path = Path(model_dir) / GUIDE_UNET_SUBFOLDER
    return path if (path / "config.json").is_file() else None


def load_guide_unet(path: str | Path, *, device=None, dtype: torch.dtype | None = None):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(path, dtype=dtype)
    if device is not None:
        unet.to(device)
    return unet.eval().requires_grad_(False)


def uses_classifier_free_guidance(unet_config, guidance_scale: float) -> bool:
    """Whether a stock SD pipeline batches an unconditional half (diffusers' own rule)."""
    return guidance_scale > 1 and unet_config.get("time_cond_proj_dim") is None


class AutoguidedUNet(torch.nn.Module):
    """``unet`` as a stock pipeline sees it, with autoguidance from ``guide`` folded into its output.

    One instance per job (the scale and the batch layout are the job's); the weights are shared.
    ``guidance_scale`` must be the scale the pipeline is called with: it decides whether the
    pipeline's batch is ``[unconditional; conditional]`` or conditional only.
    """

    def __init__(self, unet, guide, scale: float, guidance_scale: float):
        super().__init__()
        self.unet = unet
        self.guide = guide
        self.scale = float(scale)
        self.classifier_free = uses_classifier_free_guidance(unet.config, guidance_scale)
        # Scaled by 1/g so that the pipeline's own u + g (c' - u) adds exactly a (c - b).
        self.correction = self.scale / guidance_scale if self.classifier_free else self.scale

    def __getattr__(self, name: str):
        # What pipelines read from their UNet besides calling it (config, dtype, device, SDXL's
        # add_embedding...) comes from the wrapped UNet.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("unet"), name)

    def forward(self, sample, timestep, encoder_hidden_states, *args, return_dict: bool = True, **kwargs):
        prediction = self.unet(sample, timestep, encoder_hidden_states, *args, return_dict=False, **kwargs)[0]
        half = sample.shape[0] // 2 if self.classifier_free else 0
        conditional = prediction[half:]
        guide_kwargs = {key: _conditional_half(value, half) for key, value in kwargs.items()}
        guide = self.guide(sample[half:], _conditional_half(timestep, half), encoder_hidden_states[half:],
                           *args, return_dict=False, **guide_kwargs)[0]
        guided = conditional + self.correction * (conditional - guide)
        output = torch.cat([prediction[:half], guided]) if half else guided
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=output)
        return (output,)


def _conditional_half(value, half: int):
    """Per-sample extras (SDXL's added_cond_kwargs) cut to the conditional half of the batch."""
    if not half:
        return value
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 2 * half:
        return value[half:]
    if isinstance(value, dict):
        return {key: _conditional_half(item, half) for key, item in value.items()}
    return value
