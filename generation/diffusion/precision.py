"""Where to run and in which precision.

CUDA first (bf16 where the GPU has it -- Ampere and later -- else fp16; PyTorch's fused
``scaled_dot_product_attention`` is diffusers' default attention processor on torch >= 2),
then Apple MPS (fp16), else CPU.

On CPU the hardware flags say only whether bf16 *can* be fast: with AMX or AVX512-BF16 a full
Stable Diffusion UNet runs ~3x faster in bf16, yet the small built-in model measured 1.19x
*slower* in bf16 on such a CPU (its matrices are too small for the conversions to pay off), and
without those flags PyTorch emulates bf16 through fp32 and every model gets slower. So ``auto``
does not guess: :func:`measure_precision` times a few UNet calls of the loaded model in each
candidate precision on the device itself, and the loader keeps the faster
(:func:`precision_candidates`; the result is cached per model and device by the caller).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache

import torch

PRECISION_SETTINGS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {v: k for k, v in _DTYPES.items()}

# /proc/cpuinfo flags that mean bf16 matrix work runs in hardware.
_FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX512-BF16, Arm "bf16"


@dataclass(frozen=True)
class DevicePrecision:
    """The chosen device and dtype, and why (recorded in every image's metadata)."""

    device: torch.device
    dtype: torch.dtype
    setting: str
    reason: str
    attention: str
    # Seconds per UNet call (classifier-free batch of 2 at the model's default size) of each
    # precision ``auto`` measured, e.g. {"fp32": 0.012, "bf16": 0.015}; empty when not measured.
    measured: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def dtype_name(self) -> str:
        return _NAMES.get(self.dtype, str(self.dtype))

    def to_dict(self) -> dict:
        return {
            "device": str(self.device),
            "dtype": self.dtype_name,
            "precision_setting": self.setting,
            "precision_reason": self.reason,
            "attention": self.attention,
            "precision_timings": dict(self.measured),
        }


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The fast-bf16 flags this CPU advertises (empty when none, or when /proc is unavailable)."""
    found: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    found |= {flag for flag in _FAST_BF16_FLAGS if flag in flags}
                    break
    except OSError:
        pass
    capability = ""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        pass
    if "AMX" in capability.upper():
        found.add("amx")
    return tuple(sorted(found))


def cpu_has_fast_bf16() -> bool:
    return bool(cpu_bf16_flags())


def _attention_name(device: torch.device) -> str:
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return "sdpa"
    return "eager"  # pragma: no cover - torch < 2


def choose_device_and_dtype(setting: str = "auto", device: str | torch.device | None = None) -> DevicePrecision:
    """Pick the device (CUDA > MPS > CPU unless ``device`` is given) and dtype for ``setting``.

    ``setting`` is one of ``auto``, ``fp32``, ``bf16``, ``fp16``; anything else raises ``ValueError``.
    """
    setting = (setting or "auto").strip().lower()
    if setting not in PRECISION_SETTINGS:
        raise ValueError(f"precision setting must be one of {', '.join(PRECISION_SETTINGS)} (got {setting!r})")

    if device is None:
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    device = torch.device(device)

    if setting != "auto":
        return DevicePrecision(device, _DTYPES[setting], setting, f"set explicitly to {setting}",
                               _attention_name(device))

    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            dtype, reason = torch.bfloat16, "CUDA GPU with bf16 support"
        else:
            dtype, reason = torch.float16, "CUDA GPU without bf16: fp16"
    elif device.type == "mps":
        dtype, reason = torch.float16, "Apple MPS: fp16"
    elif device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            dtype, reason = torch.bfloat16, f"CPU with hardware bf16 ({', '.join(flags)})"
        else:
            dtype, reason = torch.float32, "CPU without hardware bf16 (no AMX/AVX512-BF16): fp32 is faster"
    else:
        dtype, reason = torch.float32, f"{device.type}: fp32"
    return DevicePrecision(device, dtype, "auto", reason, _attention_name(device))


def dtype_name(dtype: torch.dtype) -> str:
    return _NAMES.get(dtype, str(dtype).replace("torch.", ""))


# --------------------------------------------------------------- choosing by measurement

MEASURED_ROUNDS = 5  # timed UNet calls per precision, after one warm-up call each


def precision_candidates(precision: DevicePrecision) -> tuple[torch.dtype, ...]:
    """The dtypes ``auto`` measures on ``precision.device`` (fp32 first); one candidate: nothing to
    measure. CPU: fp32 and bf16 (whatever the flags say: measuring is cheaper than a wrong guess);
    CUDA: its half precision and fp32; MPS: fp16 only."""
    if precision.setting != "auto":
        return (precision.dtype,)
    if precision.device.type == "cpu":
        return (torch.float32, torch.bfloat16)
    if precision.device.type == "cuda":
        return (torch.float32, precision.dtype)
    return (precision.dtype,)


def _unet_inputs(unet, text_encoder, height: int, width: int, device, dtype) -> tuple[tuple, dict]:
    """A classifier-free batch (2 samples) of the shapes one denoising step feeds ``unet``."""
    generator = torch.Generator("cpu").manual_seed(0)
    config = unet.config
    scale = 8  # the SD VAE's downsampling; only the cost matters here
    latents = torch.randn((2, config.in_channels, max(1, height // scale), max(1, width // scale)),
                          generator=generator).to(device, dtype)
    tokens = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", 77)
    context_width = config.cross_attention_dim
    if isinstance(context_width, (list, tuple)):
        context_width = context_width[0]
    context = torch.randn((2, min(int(tokens), 77), int(context_width)), generator=generator).to(device, dtype)
    kwargs: dict = {}
    if getattr(config, "addition_embed_type", None) == "text_time":  # SDXL's pooled text and size conditioning
        time_width = config.addition_time_embed_dim * 6
        pooled_width = config.projection_class_embeddings_input_dim - time_width
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn((2, pooled_width), generator=generator).to(device, dtype),
            "time_ids": torch.tensor([[height, width, 0, 0, height, width]] * 2, dtype=dtype, device=device),
        }
    timestep = torch.tensor(500, device=device)
    return (latents, timestep, context), kwargs


@contextlib.contextmanager
def quiet_dtype_casts():
    """diffusers warns on every ``model.to(dtype)`` of a model whose list of modules to keep in fp32
    is empty -- nothing to keep (SD's UNet and VAE) -- so the warning says nothing; held back here."""
    modeling = logging.getLogger("diffusers.models.modeling_utils")
    level = modeling.level
    modeling.setLevel(logging.ERROR)
    try:
        yield
    finally:
        modeling.setLevel(level)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_precision(unet, text_encoder, candidates: tuple[torch.dtype, ...], *, height: int, width: int,
                      device: torch.device, rounds: int = MEASURED_ROUNDS) -> dict[str, float]:
    """Seconds per UNet call of ``unet`` (its weights in fp32) in each candidate dtype.

    A candidate other than the UNet's own dtype is timed on a converted copy, so the weights the
    model keeps are converted once, from fp32, to the winner (never fp32 -> bf16 -> fp32). The
    candidates take turns, call by call, and each keeps its fastest call: other work on the
    machine only ever adds time, so the minimum is the estimate it disturbs least, and taking
    turns spreads a burst of it over every candidate."""
    runs = []
    for dtype in candidates:
        if dtype == unet.dtype:
            model = unet
        else:
            with quiet_dtype_casts():
                model = copy.deepcopy(unet).to(dtype=dtype)
        args, kwargs = _unet_inputs(model, text_encoder, height, width, device, dtype)
        model(*args, **kwargs)  # warm-up: kernel selection, allocator, oneDNN primitive caches
        runs.append((dtype_name(dtype), model, args, kwargs))
    best = {name: float("inf") for name, *_ in runs}
    for _ in range(rounds):
        for name, model, args, kwargs in runs:
            _synchronize(device)
            started = time.perf_counter()
            model(*args, **kwargs)
            _synchronize(device)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: round(seconds, 6) for name, seconds in best.items()}


def measured_choice(precision: DevicePrecision, timings: dict[str, float]) -> DevicePrecision:
    """``precision`` with the fastest measured dtype and a reason that quotes the timings."""
    fastest = min(timings, key=timings.get)
    others = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in timings.items())
    return DevicePrecision(precision.device, _DTYPES[fastest], precision.setting,
                           f"measured on {precision.device.type}: {fastest} is fastest per UNet call ({others})",
                           precision.attention, measured=dict(timings))
