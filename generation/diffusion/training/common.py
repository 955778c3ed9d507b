"""Shared training plumbing: seeding, progress lines with ETA, checkpoints, EMA, the stage record (``stages.json``)."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Held-out data never overlaps training batches: training draws from
# step_rng(seed, stage, step), held-out sets from these fixed offsets.
HELD_OUT_SEED = 1_000_003


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def adapt_threads(max_threads: int | None) -> None:
    """Use fewer intra-op threads while the machine is oversubscribed.

    Measured on a shared 2-core box under load ~6: a VAE step took 3.6-5 s
    with one thread and 3.7-14 s with two (OpenMP workers wait at barriers
    for threads that are descheduled); unloaded, two threads win (0.6 s).
    """
    if not max_threads or max_threads < 2:
        return
    try:
        load = os.getloadavg()[0]
    except OSError:
        return
    cores = os.cpu_count() or max_threads
    want = 1 if load > cores + 0.5 else max_threads
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


def step_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    """The data RNG of one training step: a pure function of (seed, stage, step), so resume is exact."""
    return np.random.default_rng([seed, sum(map(ord, stage)), step])


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


class Progress:
    """A log-friendly progress bar: one line every ``every`` steps with loss, rate and ETA."""

    def __init__(self, stage: str, total: int, start: int = 0, every: int = 10, stream=None, width: int = 20):
        self.stage, self.total, self.start, self.every, self.width = stage, total, start, max(1, every), width
        self.stream = stream or sys.stderr
        self.max_threads = torch.get_num_threads() if os.environ.get("LDM_ADAPT_THREADS", "1") != "0" else None
        adapt_threads(self.max_threads)
        self.t0 = time.time()
        self.losses: list[float] = []

    def update(self, step: int, loss: float, **extra: float) -> None:
        """``step`` is the number of steps done so far (1-based)."""
        self.losses.append(float(loss))
        if step % self.every and step != self.total:
            return
        adapt_threads(self.max_threads)
        elapsed = time.time() - self.t0
        done = step - self.start
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - step) / rate if rate and rate > 0 else float("inf")
        frac = step / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        recent = self.losses[-self.every :]
        extras = " ".join(f"{k} {v:.4g}" for k, v in extra.items())
        print(
            f"[{self.stage}] [{bar}] {step}/{self.total} loss {sum(recent) / len(recent):.4f} {extras} "
            f"threads {torch.get_num_threads()} {rate:.2f} it/s elapsed {_fmt_seconds(elapsed)} ETA {_fmt_seconds(eta)}",
            file=self.stream,
            flush=True,
        )

    @property
    def elapsed(self) -> float:
        return time.time() - self.t0


def checkpoint_dir(work_dir: Path, stage: str) -> Path:
    return Path(work_dir) / "checkpoints" / stage


def save_checkpoint(work_dir: Path, stage: str, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``step-N.pt`` atomically and keep only the newest ``keep`` checkpoints."""
    d = checkpoint_dir(work_dir, stage)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step-{step:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "torch_rng": torch.get_rng_state(), **state}, tmp)
    os.replace(tmp, path)
    for old in sorted(d.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def latest_checkpoint(work_dir: Path, stage: str) -> Path | None:
    d = checkpoint_dir(work_dir, stage)
    found = sorted(d.glob("step-*.pt")) if d.exists() else []
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    torch.set_rng_state(state["torch_rng"])
    return state


class EMA:
    """Exponential moving average of parameters, with the usual warm-up (decay grows with step)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        # onto the device the model trains on now (a checkpoint is loaded onto the CPU)
        self.shadow = {k: v.to(self.shadow[k].device) for k, v in state["shadow"].items()}


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


def log(msg: str) -> None:
    print(msg, flush=True)


def record_stage(work_dir: Path, stage: str, **info: Any) -> None:
    """Append stage facts (steps, seconds, metrics) to ``work_dir/stages.json`` for the model card."""
    path = Path(work_dir) / "stages.json"
    data = read_json(path, {})
    data.setdefault(stage, {}).update(info)
    write_json(path, data)


def loss_summary(losses: list[float], window: int = 5) -> dict[str, float]:
    """Mean loss over the first and last ``window`` steps of this run (how tests see a loss fall)."""
    if not losses:
        return {}
    w = max(1, min(window, len(losses) // 3 or 1))
    return {"initial_loss": round(float(np.mean(losses[:w])), 5), "final_loss": round(float(np.mean(losses[-w:])), 5)}


def format_metrics(d: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.1%}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


def lr_at(step: int, base_lr: float, warmup: int, total: int, final_frac: float = 0.1) -> float:
    """Linear warm-up then cosine decay to ``final_frac * base_lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def noised_and_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps in closed form (Ho et al., 2020, eq. 4), and what the UNet regresses.

    The target follows the scheduler's ``prediction_type``: the noise itself, or
    its v-parametrisation v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho, 2022).
    """
    xt = scheduler.add_noise(x0, noise, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return xt, noise
    if kind == "v_prediction":
        return xt, scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"cannot train a UNet for prediction_type {kind!r}")
