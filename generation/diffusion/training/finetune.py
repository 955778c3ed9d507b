"""Fine-tune the UNet of any Stable Diffusion pipeline on a folder of captioned images.

The VAE and text encoder stay frozen; images are encoded once. The noise
schedule and prediction type (epsilon or v) come from the pipeline's own
scheduler config, so SD 1.x and 2.x checkpoints train with their objective.
Mixed precision (fp16 autocast with a gradient scaler, or bf16) on CUDA;
plain fp32 on CPU. Checkpoints every ``checkpoint_every`` steps; ``resume``
continues from the newest one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generation.diffusion.training.common import (EMA, Progress, latest_checkpoint, load_checkpoint, log,
                                                  noised_and_target, save_checkpoint, step_rng, write_json)
from generation.diffusion.training.data import FolderData


def finetune_unet(
    pipeline: str | Path,
    data_dir: str | Path,
    output: str | Path,
    work_dir: str | Path | None = None,
    steps: int = 500,
    batch_size: int = 1,
    lr: float = 1e-5,
    resolution: int | None = None,
    seed: int = 0,
    resume: bool = False,
    mixed_precision: str = "auto",
    checkpoint_every: int = 100,
    sample_every: int = 0,
    p_empty: float = 0.1,
    ema_decay: float | None = None,
    device: str | None = None,
    log_every: int = 10,
) -> Path:
    """Train ``pipeline``'s UNet on ``data_dir`` and save the whole pipeline to ``output``."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    work_dir = Path(work_dir or Path(output).parent / (Path(output).name + "-work"))
    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline.from_pretrained(str(pipeline), safety_checker=None, requires_safety_checker=False, torch_dtype=torch.float32)
    vae, text_encoder, tokenizer, unet = pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = resolution or unet.config.sample_size * vae_scale
    data = FolderData(data_dir, resolution, p_empty=p_empty)
    log(f"[finetune] {len(data)} captioned images at {resolution}px from {data_dir}; device {device}")

    vae.requires_grad_(False).to(device).eval()
    text_encoder.requires_grad_(False).to(device).eval()
    unet.to(device).train()
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    amp_dtype = None
    if mixed_precision == "auto":
        amp_dtype = torch.float16 if device == "cuda" else None
    elif mixed_precision == "fp16":
        amp_dtype = torch.float16
    elif mixed_precision == "bf16":
        amp_dtype = torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16 and device == "cuda")

    with torch.no_grad():
        x = torch.from_numpy(data.images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2).to(device)
        dists = [vae.encode(x[i : i + 8]).latent_dist for i in range(0, len(x), 8)]
        lat_mean = torch.cat([d.mean for d in dists])
        lat_std = torch.cat([d.std for d in dists])
    scaling = vae.config.scaling_factor

    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    ema = EMA(unet, ema_decay) if ema_decay else None
    start = 0
    if resume and (ckpt := latest_checkpoint(work_dir, "finetune")):
        state = load_checkpoint(ckpt)
        unet.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema and state.get("ema"):
            ema.load_state_dict(state["ema"])
        start = state["step"]
        log(f"[finetune] resumed from {ckpt} at step {start}")
    progress = Progress("finetune", steps, start, every=log_every)
    losses = []
    for step in range(start, steps):
        rng = step_rng(seed, "finetune", step)
        idx = rng.integers(0, len(data), size=batch_size)
        captions = ["" if rng.random() < p_empty else data.captions[i] for i in idx]
        eps_z = torch.from_numpy(rng.standard_normal(tuple(lat_mean[idx].shape)).astype(np.float32)).to(device)
        x0 = (lat_mean[idx] + lat_std[idx] * eps_z) * scaling
        t = torch.from_numpy(rng.integers(0, noise_scheduler.config.num_train_timesteps, size=batch_size)).to(device)
        noise = torch.from_numpy(rng.standard_normal(tuple(x0.shape)).astype(np.float32)).to(device)
        xt, target = noised_and_target(noise_scheduler, x0, noise, t)
        with torch.no_grad():
            ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids.to(device)
            cond = text_encoder(ids)[0]
        with torch.autocast(device_type=device if device != "mps" else "cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            pred = unet(xt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        if ema:
            ema.update(unet, step)
        losses.append(loss.item())
        progress.update(step + 1, loss.item())
        done = step + 1
        if checkpoint_every and done % checkpoint_every == 0 and done < steps:
            save_checkpoint(work_dir, "finetune", done, {"model": unet.state_dict(), "optimizer": opt.state_dict(), "ema": ema.state_dict() if ema else None})
        if sample_every and done % sample_every == 0:
            _sample(pipe, data.captions[0], Path(work_dir) / "samples" / f"step-{done:07d}.png", seed)
            unet.train()
    if ema:
        ema.copy_to(unet)
    unet.eval()
    output = Path(output)
    pipe.to("cpu")
    pipe.save_pretrained(output, safe_serialization=True)
    write_json(Path(work_dir) / "finetune.json", {"pipeline": str(pipeline), "data": str(data_dir), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "losses": losses})
    log(f"[finetune] saved the fine-tuned pipeline to {output}")
    return output


@torch.no_grad()
def _sample(pipe, prompt: str, path: Path, seed: int) -> None:
    pipe.unet.eval()
    image = pipe(prompt, num_inference_steps=20, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
