"""The GPU fast path: what a loaded model gets on a CUDA device to run faster (``LDM_FAST_PATH``).

Applied once, at load (:func:`apply_fast_path`, called by :func:`.loading.load_pipeline`), on top
of what every load already does -- the precision ``auto`` measures (fp16/bf16 against fp32, see
:mod:`.precision`) and SDPA attention (diffusers' default processor on torch >= 2):

- **cuDNN autotuning** (``cudnn.benchmark``) and TF32 matmuls for what still runs in fp32 -- process-wide
  switches, so only on CUDA;
- **SDPA** checked: a UNet left on the classic attention processor is set back to diffusers'
  ``AttnProcessor2_0`` (fused ``scaled_dot_product_attention``); other processors (IP-adapter, custom)
  are left alone;
- **channels_last** for the UNet, the guide UNet and the VAE: cuDNN's convolutions (and inductor's
  code for them) are faster in NHWC on tensor-core GPUs;
- **torch.compile** of the UNet's forward (``dynamic=False``, mode :data:`DEFAULT_COMPILE_MODE`),
  **compiled and warmed at load** for the shapes the worker expects (the model's default size, a
  classifier-free batch of one image: :func:`warm_up`). The compiled forward is used only

  * for a shape compiled at load (or by a later :func:`warm_up`): any other size or batch runs
    the ordinary eager forward instead of stopping a person's job for a compile (tens of seconds
    to minutes on a GPU) and of piling up recompiles until torch's recompile limit; and
  * while no LoRA adapter is loaded into the UNet: PEFT wraps the attention layers, which changes
    the module graph the compiled code was traced for, and every new set of adapters and weights
    would otherwise be a recompile. With adapters loaded the UNet runs eager (still channels_last,
    half precision, SDPA). ``docs/PERFORMANCE.md`` has what that costs.

  CUDA graphs (``mode="reduce-overhead"``) are not the default: a captured graph writes every
  replay's output into the same buffers, and the step loop keeps earlier steps' outputs (previews,
  multistep samplers' history); pass ``compile_mode`` to try it in ``benchmarks/bench_gpu.py``.
- **VAE decode batched**: the pipelines decode all images of a call in one ``vae.decode``; the fast
  path turns VAE slicing and tiling off so it stays that way.

``auto`` (the default) is on for CUDA only: on a CPU nothing of this was measured faster for the
models ldmsite serves end to end (``docs/PERFORMANCE.md``, "GPU fast path"), and an inductor
compile on a 2-core CPU takes about a minute even for a tiny UNet. ``off`` leaves the model exactly
as loaded (bit-identical images, tested); ``on`` applies it on any device.

Django-free, like the rest of :mod:`generation.diffusion`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from .invariance import make_batch_invariant

logger = logging.getLogger(__name__)

FAST_PATH_SETTINGS = ("auto", "on", "off")
# Autotuned kernels, no CUDA graphs (see the module docstring for why not "reduce-overhead").
DEFAULT_COMPILE_MODE = "max-autotune-no-cudagraphs"


@dataclass
class FastPath:
    """What the fast path did to a loaded model (recorded in image metadata when enabled)."""

    setting: str
    enabled: bool
    reason: str
    applied: list[str] = field(default_factory=list)
    compile_mode: str | None = None
    compile_backend: str | None = None
    warmup_seconds: float = 0.0
    unet: "CompiledForward | None" = field(default=None, repr=False)

    @property
    def compiled_shapes(self) -> list[str]:
        return self.unet.shape_names() if self.unet is not None else []

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "enabled": self.enabled, "reason": self.reason,
                "applied": list(self.applied), "compile_mode": self.compile_mode,
                "compile_backend": self.compile_backend, "compiled_shapes": self.compiled_shapes,
                "warmup_seconds": round(self.warmup_seconds, 3)}


def parse_setting(setting: str | None) -> str:
    value = (setting or "auto").strip().lower()
    if value not in FAST_PATH_SETTINGS:
        raise ValueError(f"fast path setting must be one of {', '.join(FAST_PATH_SETTINGS)} (got {setting!r})")
    return value


def fast_path_wanted(setting: str | None, device: torch.device | str) -> tuple[bool, str]:
    """(whether to apply the fast path, why) for a setting (auto/on/off) and the model's device."""
    setting = parse_setting(setting)
    device = torch.device(device)
    if setting == "off":
        return False, "LDM_FAST_PATH=off"
    if setting == "on":
        return True, f"LDM_FAST_PATH=on ({device.type})"
    if device.type == "cuda":
        return True, "auto: CUDA device"
    return False, f"auto: on for CUDA only, this model runs on {device.type}"


def _shape_key(sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: Any, kwargs: dict) -> tuple:
    """What the compiled code is specialised for (dynamo's guards would recompile on any change)."""
    context = tuple(encoder_hidden_states.shape) if isinstance(encoder_hidden_states, torch.Tensor) else None
    return (tuple(sample.shape), sample.dtype, tuple(timestep.shape), context, tuple(sorted(kwargs)),
            bool(kwargs.get("return_dict", True)))


def _steady_kwargs(kwargs: dict) -> dict:
    """The UNet's keyword arguments in one spelling: ``None`` is every optional argument's default,
    so those are left out (diffusers' LoRA-scale wrapper reads ``kwargs`` and dynamo guards on how
    many there are), and ``return_dict`` is always given."""
    steady = {name: value for name, value in kwargs.items() if value is not None}
    steady["return_dict"] = bool(kwargs.get("return_dict", True))
    return steady


def _as_float_timestep(timestep: Any, device: torch.device) -> torch.Tensor:
    """Schedulers hand out int64 (DDIM, DPM++) or float32 (Euler, Karras) timesteps; the UNet turns
    either into float32 before its sinusoidal embedding (``Timesteps``), so one float32 form gives
    the same values and spares a second compile per shape."""
    if not isinstance(timestep, torch.Tensor):
        timestep = torch.tensor(timestep)
    return timestep.to(device=device, dtype=torch.float32)


class CompiledForward:
    """The UNet's ``forward`` with a compiled twin, used only for warmed shapes and without adapters
    (see the module docstring). Installed as the UNet instance's ``forward``, so the module, its
    weights, its config and diffusers' LoRA loading see the ordinary UNet."""

    def __init__(self, unet, *, mode: str | None, backend: str):
        self.unet = unet
        self.eager = unet.forward  # the bound method of the class, from before this wrapper
        self.compiled = torch.compile(self.eager, mode=mode, backend=backend, dynamic=False, fullgraph=False)
        self.shapes: set[tuple] = set()
        self.compiled_calls = 0
        self.eager_calls = 0
        self._lock = threading.Lock()  # warm-ups of one model from two threads compile once

    def adapters_loaded(self) -> bool:
        """PEFT layers in the UNet (diffusers sets the flag when it injects them and clears it on unload)."""
        return bool(getattr(self.unet, "_hf_peft_config_loaded", False))

    def __call__(self, sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        # Anything the warm-up did not compile for (positional extras, per-call attention arguments,
        # a timestep embedding condition) runs eager rather than recompiling.
        if not args and not self.adapters_loaded() and kwargs.get("cross_attention_kwargs") is None \
                and kwargs.get("timestep_cond") is None:
            steady, named = _as_float_timestep(timestep, sample.device), _steady_kwargs(kwargs)
            if _shape_key(sample, steady, encoder_hidden_states, named) in self.shapes:
                self.compiled_calls += 1
                return self.compiled(sample, steady, encoder_hidden_states, **named)
        self.eager_calls += 1
        return self.eager(sample, timestep, encoder_hidden_states, *args, **kwargs)

    @torch.no_grad()
    def warm(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, **kwargs) -> float:
        """Compile (first call) and run once more for ``sample``'s shape, as the pipelines call the
        UNet (``return_dict=False``); seconds spent."""
        timestep = _as_float_timestep(timestep, sample.device)
        named = _steady_kwargs({**kwargs, "return_dict": False})
        key = _shape_key(sample, timestep, context, named)
        with self._lock:
            if key in self.shapes:
                return 0.0
            started = time.perf_counter()
            for _ in range(2):  # the second call proves the guards hold (no recompile per call)
                self.compiled(sample, timestep, context, **named)
            _synchronize(sample.device)
            self.shapes.add(key)
            return time.perf_counter() - started

    def shape_names(self) -> list[str]:
        return sorted(f"{'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')}"
                      for shape, dtype, *_ in self.shapes)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _unet_inputs(unet, batch: int, height: int, width: int, vae_scale: int, device, dtype) -> tuple:
    """A UNet call's inputs as the pipelines make them: ``batch`` latents at the size, one timestep,
    77-token text context (SDXL: pooled text and size conditioning)."""
    generator = torch.Generator("cpu").manual_seed(0)
    config = unet.config
    latents = torch.randn((batch, config.in_channels, height // vae_scale, width // vae_scale),
                          generator=generator).to(device, dtype)
    context_width = config.cross_attention_dim
    if isinstance(context_width, (list, tuple)):
        context_width = context_width[0]
    context = torch.randn((batch, 77, int(context_width)), generator=generator).to(device, dtype)
    kwargs: dict[str, Any] = {}
    if getattr(config, "addition_embed_type", None) == "text_time":
        time_width = config.addition_time_embed_dim * 6
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn((batch, config.projection_class_embeddings_input_dim - time_width),
                                       generator=generator).to(device, dtype),
            "time_ids": torch.tensor([[height, width, 0, 0, height, width]] * batch, dtype=dtype, device=device)}
    # The pipelines hand the UNet a 0-d timestep tensor taken from the scheduler's timesteps.
    return latents, torch.tensor(500.0, device=device), context, kwargs


def warm_up(model, *, images: Iterable[int] = (1,), height: int | None = None, width: int | None = None,
            guidance: bool = True) -> float:
    """Compile the fast path's UNet for jobs of each number of ``images`` at ``height`` x ``width``
    (default: the model's default size), classifier-free (``guidance``: a UNet batch of twice the
    images) or not. Seconds spent; 0 when the model has no compiled UNet."""
    report: FastPath | None = getattr(model, "fast_path", None)
    if report is None or report.unet is None:
        return 0.0
    unet = model.pipeline.unet
    height = height or model.limits.default_height
    width = width or model.limits.default_width
    seconds = 0.0
    for count in images:
        latents, timestep, context, kwargs = _unet_inputs(unet, count * (2 if guidance else 1), height, width,
                                                          int(model.pipeline.vae_scale_factor), model.device,
                                                          model.dtype)
        seconds += report.unet.warm(latents, timestep, context, **kwargs)
    report.warmup_seconds += seconds
    return seconds


def _use_sdpa(unet) -> str:
    """Set diffusers' SDPA processor where a UNet has the classic one; what it runs now."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    processors = unet.attn_processors
    if hasattr(torch.nn.functional, "scaled_dot_product_attention") and processors and \
            all(type(p) is AttnProcessor for p in processors.values()):
        unet.set_attn_processor(AttnProcessor2_0())
        processors = unet.attn_processors
    return ", ".join(sorted({type(p).__name__ for p in processors.values()})) or "none"


def apply_fast_path(model, setting: str | None = "auto", *, compile: bool = True,
                    compile_mode: str | None = DEFAULT_COMPILE_MODE, compile_backend: Any = "inductor",
                    warm_images: Iterable[int] = (1,)) -> FastPath:
    """Apply the fast path to ``model`` (a :class:`~.loading.LoadedModel`) when ``setting`` wants it
    on its device; sets and returns ``model.fast_path``. Once per model: a second call returns the
    first report. ``compile=False`` applies everything but ``torch.compile``; ``compile_backend``
    other than inductor (e.g. ``"eager"``: dynamo's graph capture without code generation) takes no
    mode. ``warm_images``: the job sizes (images per job, classifier-free) compiled at load."""
    existing = getattr(model, "fast_path", None)
    if isinstance(existing, FastPath) and existing.enabled:
        return existing
    setting = parse_setting(setting)
    enabled, reason = fast_path_wanted(setting, model.device)
    report = FastPath(setting=setting, enabled=enabled, reason=reason)
    if not enabled:
        model.fast_path = report
        return report
    pipeline = model.pipeline
    if model.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        report.applied.append("cudnn.benchmark + TF32")
    report.applied.append(f"attention: {_use_sdpa(pipeline.unet)}")
    for name, module in (("unet", pipeline.unet), ("guide_unet", model.guide_unet), ("vae", pipeline.vae)):
        if module is not None:
            module.to(memory_format=torch.channels_last)
            report.applied.append(f"channels_last: {name}")
    vae = pipeline.vae
    for switch in ("disable_slicing", "disable_tiling"):
        if hasattr(vae, switch):
            getattr(vae, switch)()
    report.applied.append("vae: one decode per batch")
    if compile:
        # The engine gives a CPU model's layers batch-invariant forwards on its first job (a no-op on
        # CUDA); done here first, the graph compiled at load is the one jobs run, not a recompile.
        make_batch_invariant(pipeline.unet, vae, getattr(pipeline, "text_encoder", None),
                             getattr(pipeline, "text_encoder_2", None), model.guide_unet)
        mode = compile_mode if compile_backend == "inductor" else None
        report.unet = CompiledForward(pipeline.unet, mode=mode, backend=compile_backend)
        pipeline.unet.forward = report.unet
        backend = compile_backend if isinstance(compile_backend, str) else getattr(compile_backend, "__name__", "custom")
        report.compile_mode, report.compile_backend = mode, backend
        report.applied.append(f"torch.compile: unet ({backend}, mode {mode or 'default'}, dynamic=False)")
    model.fast_path = report
    seconds = 0.0
    if compile:
        try:
            seconds = warm_up(model, images=warm_images)
        except Exception as error:  # noqa: BLE001 - a compiler failure costs the speed-up, not the model
            # e.g. inductor's CPU GEMM template failed on the batch-invariant layers (torch 2.13, bench_gpu.py)
            remove_fast_path(model)
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"
            report.applied.append(f"torch.compile failed at warm-up, the UNet runs uncompiled ({reason})")
            logger.warning("fast path: compiling the UNet of %s failed; it runs uncompiled", model.name, exc_info=True)
    logger.info("fast path on %s (%s): %s; compiled at load in %.1f s", model.name, reason,
                "; ".join(report.applied), seconds)
    return report


def remove_fast_path(model) -> None:
    """Put the UNet's own forward back (the weights stay channels_last: same values, other strides)."""
    report: FastPath | None = getattr(model, "fast_path", None)
    if report is not None and report.unet is not None:
        try:
            del model.pipeline.unet.forward  # the instance attribute; the class's forward shows again
        except AttributeError:
            pass
        report.unet = None


__all__ = ["FAST_PATH_SETTINGS", "DEFAULT_COMPILE_MODE", "FastPath", "CompiledForward", "parse_setting",
           "fast_path_wanted", "apply_fast_path", "warm_up", "remove_fast_path"]
