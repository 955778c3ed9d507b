"""Stage 3, the VAE: an ``AutoencoderKL`` trained on reconstruction, gated on the evaluator's accuracy."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from generation.diffusion import dataset as shapes
from generation.diffusion import evaluate
from generation.diffusion.training.common import (HELD_OUT_SEED, Progress, format_metrics, latest_checkpoint,
                                                  load_checkpoint, log, loss_summary, record_stage, save_checkpoint,
                                                  step_rng)
from generation.diffusion.training.images import save_grid, to_tensor, to_uint8
from generation.diffusion.training.presets import TrainConfig


def vae_model(cfg: TrainConfig):
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers,
        latent_channels=cfg.vae_latent_channels,
        # Several channels per group: with one channel per group GroupNorm is an
        # instance norm that subtracts each image's mean colour before conv_out,
        # and the first VAE trained here got 24% of object colours right.
        norm_num_groups=cfg.vae_norm_groups,
        sample_size=cfg.resolution,
        # Attention at the bottleneck buys nothing for flat shapes and costs time on CPU.
        mid_block_add_attention=False,
    )


@torch.no_grad()
def vae_reconstruction_score(vae, count: int, seed: int, batch: int = 100) -> dict[str, float]:
    """The evaluator's accuracy on VAE reconstructions (posterior mode) of held-out dataset images."""
    images, specs = shapes.generate(count, seed)
    recon = []
    for i in range(0, count, batch):
        x = to_tensor(images[i : i + batch])
        recon.append(to_uint8(vae.decode(vae.encode(x).latent_dist.mode()).sample))
    return evaluate.score(np.concatenate(recon), [s.attributes() for s in specs])


@torch.no_grad()
def measure_scaling_factor(vae, data, seed: int, count: int = 512) -> float:
    """1 / std of the latents over dataset images, so scaled latents have unit variance (Rombach et al., 2022, sec. 4.3.2)."""
    images, _ = data.batch(np.random.default_rng(seed), count, p_empty=0.0)
    z = torch.cat([vae.encode(to_tensor(images[i : i + 128])).latent_dist.sample() for i in range(0, count, 128)])
    return float(1.0 / z.flatten().std())


def edge_weights(x: torch.Tensor, strength: float) -> torch.Tensor:
    """1 + ``strength`` on a 3-px band around colour edges, 1 elsewhere.

    Flat backgrounds dominate a plain pixel loss; the corners and apexes of
    small shapes are a few pixels. Unweighted, the VAE here reconstructed
    small triangles as blobs (fill ratio ~0.7) and stalled at 82% shape
    accuracy on its gate after 1,100 steps.
    """
    if strength <= 0:
        return torch.ones_like(x[:, :1])
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().amax(1, keepdim=True) > 0.1
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().amax(1, keepdim=True) > 0.1
    edges = torch.zeros_like(x[:, :1], dtype=torch.bool)
    edges[..., :, 1:] |= dx
    edges[..., :, :-1] |= dx
    edges[..., 1:, :] |= dy
    edges[..., :-1, :] |= dy
    band = F.max_pool2d(edges.float(), 3, stride=1, padding=1)
    return 1 + strength * band


def train_vae(cfg: TrainConfig, work_dir: Path, data, resume: bool = False, enforce_gate: bool = True):
    """``AutoencoderKL``: L1 + MSE reconstruction plus a small KL term; gated on the evaluator.

    After ``vae_steps`` the reconstructions of held-out images are judged;
    while any attribute is below ``vae_gate`` another ``vae_extra_steps`` are
    trained, up to ``vae_max_steps``. A VAE that never passes raises, because
    a UNet trained on its latents cannot pass the model's quality bar either.
    """
    torch.manual_seed(cfg.seed + 1)
    vae = vae_model(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start, target, earlier = 0, cfg.vae_steps, 0.0
    gate_history: list[dict] = []
    if resume and (ckpt := latest_checkpoint(work_dir, "vae")):
        state = load_checkpoint(ckpt)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, gate_history, earlier = state["step"], state.get("gate_history", []), state.get("seconds", 0.0)
        target = max(start, min(state["target"], cfg.vae_max_steps))
        log(f"[vae] resumed from {ckpt} at step {start} (target {target})")
    samples_dir = Path(work_dir) / "samples" / "vae"
    t0 = time.time() - earlier  # seconds count the whole stage, across resumes
    step = start
    passed = False
    losses: list[float] = []
    while True:
        progress = Progress("vae", target, step, every=cfg.log_every)
        vae.train()
        while step < target:
            rng = step_rng(cfg.seed, "vae", step)
            images, _ = data.batch(rng, cfg.vae_batch, p_empty=0.0)
            x = to_tensor(images)
            # Constant LR with a short warm-up: the step count may grow while the gate fails.
            for g in opt.param_groups:
                g["lr"] = cfg.vae_lr * min(1.0, (step + 1) / 50)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.vae_bf16):
                posterior = vae.encode(x).latent_dist
                recon = vae.decode(posterior.sample()).sample
            recon = recon.float()
            err = (recon - x).abs() + (recon - x) ** 2
            rec = (edge_weights(x, cfg.vae_edge_weight) * err).mean()
            kl = posterior.kl().mean() / x[0].numel()
            loss = rec + cfg.vae_kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            step += 1
            progress.update(step, loss.item(), rec=rec.item())
            if step % cfg.checkpoint_every == 0 and step < target:
                save_checkpoint(work_dir, "vae", step, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "target": target, "gate_history": gate_history, "seconds": time.time() - t0})
            if step % cfg.sample_every == 0:
                save_vae_samples(vae, samples_dir / f"step-{step:07d}.png", cfg.seed)
        losses.extend(progress.losses)
        vae.eval()
        if not data.procedural:
            passed = True
            break
        result = vae_reconstruction_score(vae, cfg.vae_gate_images, HELD_OUT_SEED + cfg.seed + 1)
        gate_history.append({"step": step, **result})
        worst = min(result[a] for a in shapes.ATTRIBUTES)
        log(f"[vae] gate at step {step}: {format_metrics(result)} (need every attribute >= {cfg.vae_gate:.0%})")
        if worst >= cfg.vae_gate:
            passed = True
            break
        if step + cfg.vae_extra_steps > cfg.vae_max_steps or cfg.vae_extra_steps <= 0:
            break
        target = step + cfg.vae_extra_steps
        save_checkpoint(work_dir, "vae", step, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "target": target, "gate_history": gate_history, "seconds": time.time() - t0})
    scaling = measure_scaling_factor(vae, data, cfg.seed + 7)
    vae.register_to_config(scaling_factor=scaling)
    save_vae_samples(vae, samples_dir / "final.png", cfg.seed)
    out_dir = Path(work_dir) / "vae"
    vae.save_pretrained(out_dir)
    record_stage(work_dir, "vae", steps=step, batch=cfg.vae_batch, seconds=round(time.time() - t0, 1), **loss_summary(losses), scaling_factor=scaling, gate=gate_history, gate_passed=passed)
    log(f"[vae] scaling factor {scaling:.4f}; gate {'passed' if passed else 'FAILED'} -> {out_dir}")
    if not passed and enforce_gate:
        raise RuntimeError(f"VAE reconstruction gate failed after {step} steps: {gate_history[-1]}")
    return vae


@torch.no_grad()
def save_vae_samples(vae, path: Path, seed: int, count: int = 8) -> None:
    images, _ = shapes.generate(count, HELD_OUT_SEED + seed + 2)
    was = vae.training
    vae.eval()
    recon = to_uint8(vae.decode(vae.encode(to_tensor(images)).latent_dist.mode()).sample)
    vae.train(was)
    save_grid(np.concatenate([images, recon]), path, rows=2)


def load_vae(work_dir: Path, prefer_decoder_finetune: bool = False):
    """The stage's VAE; with ``prefer_decoder_finetune`` the decoder-refined one when it exists
    (same encoder, so latents -- and a UNet trained on them -- are unchanged)."""
    refined = Path(work_dir) / "vae_decoder"
    if prefer_decoder_finetune and (refined / "config.json").exists():
        return AutoencoderKL.from_pretrained(refined).eval()
    return AutoencoderKL.from_pretrained(Path(work_dir) / "vae").eval()
