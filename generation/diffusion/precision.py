"""Where to run and in which precision.

CUDA first (bf16 where the GPU has it -- Ampere and later -- else fp16; PyTorch's fused
``scaled_dot_product_attention`` is diffusers' default attention processor on torch >= 2),
then Apple MPS (fp16), else CPU. On CPU bf16 only pays off with hardware bf16 matrix support
(Intel AMX, AVX512-BF16, or Arm BF16 dot products); without it PyTorch emulates bf16 through fp32 and a
step gets *slower*, so the automatic choice is fp32 there.
"""

from __future__ import annotations

from dataclasses import dataclass
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
