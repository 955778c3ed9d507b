"""The optional vae_decoder stage: refine only the VAE decoder (encoder frozen, latents unchanged) until the gate passes."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from generation.diffusion import dataset as shapes
from generation.diffusion.training.common import (HELD_OUT_SEED, Progress, format_metrics, latest_checkpoint,
                                                  load_checkpoint, log, record_stage, save_checkpoint, step_rng)
from generation.diffusion.training.images import to_tensor
from generation.diffusion.training.presets import TrainConfig
from generation.diffusion.training.vae_stage import edge_weights, save_vae_samples, vae_reconstruction_score


def finetune_vae_decoder(cfg: TrainConfig, work_dir: Path, data, steps: int, resume: bool = False, gate_every: int = 300):
    """Keep training only the VAE decoder (encoder frozen) until the reconstruction gate passes.

    The latent space is fixed by the encoder, so this can run after (or
    beside) the UNet stage without invalidating it; export picks the result
    up from ``work_dir/vae_decoder``.
    """
    vae = AutoencoderKL.from_pretrained(Path(work_dir) / "vae")
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    start, earlier = 0, 0.0
    history: list[dict] = []
    if resume and (ckpt := latest_checkpoint(work_dir, "vae_decoder")):
        state = load_checkpoint(ckpt)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history, earlier = state["step"], state.get("gate_history", []), state.get("seconds", 0.0)
        log(f"[vae_decoder] resumed from {ckpt} at step {start}")
    out_dir = Path(work_dir) / "vae_decoder"
    progress = Progress("vae_decoder", steps, start, every=cfg.log_every)
    t0 = time.time() - earlier  # seconds count the whole stage, across resumes
    for step in range(start, steps):
        vae.decoder.train()
        rng = step_rng(cfg.seed, "vae_decoder", step)
        images, _ = data.batch(rng, cfg.vae_batch, p_empty=0.0)
        x = to_tensor(images)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        recon = vae.decode(z).sample
        err = (recon - x).abs() + (recon - x) ** 2
        loss = (edge_weights(x, cfg.vae_edge_weight) * err).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        progress.update(step + 1, loss.item())
        done = step + 1
        if done % gate_every == 0 or done == steps:
            vae.eval()
            result = vae_reconstruction_score(vae, cfg.vae_gate_images, HELD_OUT_SEED + cfg.seed + 1)
            history.append({"step": done, **result})
            log(f"[vae_decoder] gate at step {done}: {format_metrics(result)}")
            vae.save_pretrained(out_dir)
            save_vae_samples(vae, Path(work_dir) / "samples" / "vae_decoder" / f"step-{done:07d}.png", cfg.seed)
            record_stage(work_dir, "vae_decoder", steps=done, batch=cfg.vae_batch, seconds=round(time.time() - t0, 1), gate=history, gate_passed=min(result[a] for a in shapes.ATTRIBUTES) >= cfg.vae_gate)
            if min(result[a] for a in shapes.ATTRIBUTES) >= cfg.vae_gate:
                log(f"[vae_decoder] gate passed at step {done} -> {out_dir}")
                break
        # After the gate, so that a checkpoint at a gate step carries that gate's result.
        if done % cfg.checkpoint_every == 0 and done < steps:
            save_checkpoint(work_dir, "vae_decoder", done, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "gate_history": history, "seconds": time.time() - t0})
    return vae
