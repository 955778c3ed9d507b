"""What a benchmark ran on, in one line for its report (CPU model, cores, torch threads, hardware bf16,
torch version, load average)."""

import os
import platform

import torch

from generation.diffusion.precision import cpu_bf16_flags


def describe_machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ", ".join(cpu_bf16_flags()) or "none"
    return (f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {platform.machine()}, "
            f"hardware bf16: {flags}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}")
