"""Stage 5, export: a plain ``StableDiffusionPipeline`` directory plus ``clip/``, ``latent_preview.json``
and, optionally, ``guide_unet/``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline

from generation.diffusion.autoguidance import GUIDE_UNET_SUBFOLDER, load_guide_unet
from generation.diffusion.training.clip_stage import load_clip, text_encoder_from_clip
from generation.diffusion.training.common import log, record_stage, write_json
from generation.diffusion.training.images import to_tensor
from generation.diffusion.training.presets import TrainConfig
from generation.diffusion.training.schedule import sampling_scheduler
from generation.diffusion.training.tokenizer_stage import load_tokenizer
from generation.diffusion.training.unet_stage import load_unet
from generation.diffusion.training.vae_stage import load_vae


@torch.no_grad()
def fit_latent_preview(vae, data, seed: int, count: int = 256) -> dict:
    """Least-squares latent -> RGB factors for cheap step previews.

    Input: the *scaled* latents the sampler works on (VAE latent x
    scaling_factor); target: the VAE decoder's output average-pooled to the
    latent grid, in -1..1.
    """
    images, _ = data.batch(np.random.default_rng([seed, 77]), count, p_empty=0.0)
    x = to_tensor(images)
    z = vae.encode(x).latent_dist.mode()
    decoded = vae.decode(z).sample.clamp(-1, 1)
    target = F.adaptive_avg_pool2d(decoded, z.shape[-2:])
    zs = (z * vae.config.scaling_factor).permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    rgb = target.permute(0, 2, 3, 1).reshape(-1, 3)
    design = torch.cat([zs, torch.ones(len(zs), 1)], dim=1).double()
    solution = torch.linalg.lstsq(design, rgb.double()).solution.float()
    residual = (design.float() @ solution - rgb).pow(2).mean().sqrt().item()
    return {
        "matrix": solution[:-1].tolist(),
        "bias": solution[-1].tolist(),
        "output_range": "-1..1",
        "latent_space": "scaled (vae latents x scaling_factor, as seen by the scheduler)",
        "fit_rmse": round(residual, 4),
        "scaling_factor": vae.config.scaling_factor,
    }


def export_pipeline(cfg: TrainConfig, work_dir: Path, export_dir: Path, data, fp16: bool = False,
                    guide_unet: str | Path | None = None) -> Path:
    """Write the plain ``StableDiffusionPipeline`` directory plus ``clip/`` and ``latent_preview.json``,
    and ``guide_unet/`` (for autoguidance, ``generation.diffusion.autoguidance``) from ``guide_unet``.

    fp32 by default: the whole model is ~13 MB in fp32, and with fp16 files a
    plain ``StableDiffusionPipeline.from_pretrained(dir)`` (no ``torch_dtype``)
    upcasts the UNet but keeps the text encoder in fp16, and fails on a CPU
    with a Half/Float matmul mismatch (transformers 5.24 / diffusers 0.42).
    """
    export_dir = Path(export_dir)
    tokenizer = load_tokenizer(work_dir)
    clip = load_clip(work_dir)
    text_encoder = text_encoder_from_clip(clip)
    vae = load_vae(work_dir, prefer_decoder_finetune=True)
    unet = load_unet(work_dir)
    guide = _fitting_guide_unet(guide_unet, unet) if guide_unet else None  # refused before anything is written
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sampling_scheduler(cfg.num_train_timesteps),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    preview = fit_latent_preview(vae, data, cfg.seed)
    dtype = torch.float16 if fp16 else torch.float32
    # Keep any README (the model card) that is already there.
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "clip", GUIDE_UNET_SUBFOLDER):
        _clear_dir(export_dir / sub)
    pipe.to(dtype)
    pipe.save_pretrained(export_dir, safe_serialization=True)
    clip.to(dtype).save_pretrained(export_dir / "clip", safe_serialization=True)
    tokenizer.save_pretrained(export_dir / "clip")
    src = Path(work_dir) / "clip" / "preprocessor_config.json"
    if src.exists():
        (export_dir / "clip" / "preprocessor_config.json").write_text(src.read_text())
    write_json(export_dir / "latent_preview.json", preview)
    if guide is not None:
        guide.to(dtype).save_pretrained(export_dir / GUIDE_UNET_SUBFOLDER, safe_serialization=True)
    size = sum(p.stat().st_size for p in export_dir.rglob("*") if p.is_file())
    record_stage(work_dir, "export", bytes=size, dtype=str(dtype).replace("torch.", ""), latent_preview_rmse=preview["fit_rmse"])
    log(f"[export] {export_dir} ({size / 1e6:.1f} MB, {dtype}); preview fit rmse {preview['fit_rmse']}")
    return export_dir


def _fitting_guide_unet(path: str | Path, unet):
    """The guide UNet at ``path``, if it reads and writes the same tensors as ``unet``.

    A guide may be smaller (Karras et al. use smaller ones too), but its inputs and outputs must
    be the model's.
    """
    guide = load_guide_unet(path, dtype=torch.float32)
    differ = [k for k in ("in_channels", "out_channels", "cross_attention_dim", "addition_embed_type")
              if guide.config.get(k) != unet.config.get(k)]
    if differ:
        raise ValueError(f"guide UNet {path} does not fit the model's UNet: its {', '.join(differ)} differ")
    return guide


def _clear_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
