"""Stage 2, CLIP: contrastive training of the text and image towers; the text tower is the pipeline's text encoder."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextModel

from generation.diffusion import dataset as shapes
from generation.diffusion import evaluate
from generation.diffusion.training.common import (HELD_OUT_SEED, Progress, format_metrics, latest_checkpoint,
                                                  load_checkpoint, log, loss_summary, lr_at, record_stage,
                                                  save_checkpoint, step_rng)
from generation.diffusion.training.presets import TrainConfig
from generation.diffusion.training.tokenizer_stage import load_tokenizer, tokenize


def clip_config(cfg: TrainConfig, tokenizer):
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.clip_hidden,
        intermediate_size=4 * cfg.clip_hidden,
        num_hidden_layers=cfg.clip_layers,
        num_attention_heads=cfg.clip_heads,
        max_position_embeddings=cfg.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.clip_projection,
    )
    vision = dict(
        hidden_size=cfg.clip_hidden,
        intermediate_size=4 * cfg.clip_hidden,
        num_hidden_layers=cfg.clip_vision_layers,
        num_attention_heads=cfg.clip_heads,
        image_size=cfg.resolution,
        patch_size=cfg.clip_patch,
        projection_dim=cfg.clip_projection,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.clip_projection)


def _clip_images(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(evaluate.clip_pixel_values(images, images.shape[1]))


def train_clip(cfg: TrainConfig, work_dir: Path, data, resume: bool = False):
    """CLIP with the symmetric contrastive loss over cosine similarities and a learned temperature (Radford et al., 2021).

    ``CLIPModel(return_loss=True)`` computes exactly that loss; the images are
    normalised with CLIP's usual mean/std, which ship in the processor config.
    """
    tokenizer = load_tokenizer(work_dir)
    torch.manual_seed(cfg.seed)
    model = CLIPModel(clip_config(cfg, tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.05)
    start, earlier = 0, 0.0
    if resume and (ckpt := latest_checkpoint(work_dir, "clip")):
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, earlier = state["step"], state.get("seconds", 0.0)
        log(f"[clip] resumed from {ckpt} at step {start}")
    total = cfg.clip_steps
    progress = Progress("clip", total, start, every=cfg.log_every)
    t0 = time.time() - earlier  # seconds count the whole stage, across resumes
    model.train()
    for step in range(start, total):
        rng = step_rng(cfg.seed, "clip", step)
        # No empty captions here: an empty caption is not a description to contrast.
        images, captions = data.batch(rng, cfg.clip_batch, p_empty=0.0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.clip_lr, max(1, total // 20), total)
        out = model(input_ids=tokenize(tokenizer, captions), pixel_values=_clip_images(images), return_loss=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        progress.update(step + 1, out.loss.item(), temp=model.logit_scale.exp().item())
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            save_checkpoint(work_dir, "clip", step + 1, {"model": model.state_dict(), "optimizer": opt.state_dict(), "seconds": time.time() - t0})
        if data.procedural and (step + 1) % cfg.sample_every == 0 and step + 1 < total:
            log(f"[clip] step {step + 1} zero-shot {format_metrics(clip_zero_shot_held_out(model, tokenizer, cfg, 200))}")
    model.eval()
    out_dir = Path(work_dir) / "clip"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    try:
        CLIPImageProcessor(
            size={"shortest_edge": cfg.resolution},
            crop_size={"height": cfg.resolution, "width": cfg.resolution},
            image_mean=list(evaluate.CLIP_MEAN),
            image_std=list(evaluate.CLIP_STD),
        ).save_pretrained(out_dir)
    except Exception as exc:  # the processor config is a convenience for CLIPProcessor users
        log(f"[clip] could not save image processor config: {exc}")
    info: dict[str, Any] = {"steps": total, "batch": cfg.clip_batch, "seconds": round(time.time() - t0, 1), **loss_summary(progress.losses)}
    if data.procedural:
        info["zero_shot"] = clip_zero_shot_held_out(model, tokenizer, cfg, 500)
        log(f"[clip] held-out zero-shot accuracy {format_metrics(info['zero_shot'])}")
    record_stage(work_dir, "clip", **info)
    return model


def clip_zero_shot_held_out(model, tokenizer, cfg: TrainConfig, count: int) -> dict[str, float]:
    images, specs = shapes.generate(count, HELD_OUT_SEED + cfg.seed)
    was_training = model.training
    model.eval()
    result = evaluate.clip_zero_shot(model, tokenizer, images, [s.attributes() for s in specs])
    model.train(was_training)
    return result


def load_clip(work_dir: Path):
    return CLIPModel.from_pretrained(Path(work_dir) / "clip").eval()


def text_encoder_from_clip(clip_model):
    """The CLIP text tower as a standalone ``CLIPTextModel`` (the pipeline's text encoder)."""
    encoder = CLIPTextModel(clip_model.config.text_config)
    tower = clip_model.text_model
    # transformers 5 nests a whole CLIPTextModel in CLIPModel; older versions a CLIPTextTransformer.
    if isinstance(tower, CLIPTextModel):
        encoder.load_state_dict(tower.state_dict())
    else:
        encoder.text_model.load_state_dict(tower.state_dict())
    return encoder.eval()
