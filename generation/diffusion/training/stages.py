"""The four training stages of the built-in model and the export to a pipeline directory.

Each stage reads what the previous ones wrote under ``work_dir`` and writes
its own result there (``tokenizer/``, ``clip/``, ``vae/``, ``unet/``), so
stages can be run separately and re-run. Long stages checkpoint every
``checkpoint_every`` steps under ``work_dir/checkpoints/<stage>/`` and resume
from the newest one with ``resume=True``; every batch is drawn from an RNG
seeded by ``(seed, stage, step)``, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from generation.diffusion import dataset as shapes
from generation.diffusion import evaluate
from generation.diffusion.autoguidance import GUIDE_UNET_SUBFOLDER, load_guide_unet
from generation.diffusion.training.common import (
    EMA,
    Progress,
    latest_checkpoint,
    load_checkpoint,
    lr_at,
    noised_and_target,
    read_json,
    save_checkpoint,
    step_rng,
    write_json,
)
from generation.diffusion.training.presets import BUILTIN_SAMPLER, TrainConfig

STAGES = ("tokenizer", "clip", "vae", "unet", "export")

# Held-out data never overlaps training batches: training draws from
# step_rng(seed, stage, step), held-out sets from these fixed offsets.
HELD_OUT_SEED = 1_000_003


def log(msg: str) -> None:
    print(msg, flush=True)


def _record(work_dir: Path, stage: str, **info: Any) -> None:
    """Append stage facts (steps, seconds, metrics) to ``work_dir/stages.json`` for the model card."""
    path = Path(work_dir) / "stages.json"
    data = read_json(path, {})
    data.setdefault(stage, {}).update(info)
    write_json(path, data)


# --------------------------------------------------------------------------
# 1. tokenizer


def train_tokenizer(cfg: TrainConfig, work_dir: Path, corpus: list[str]):
    """A byte-level BPE over the caption vocabulary (``tokenizers``), saved as a ``CLIPTokenizer``.

    It uses exactly the normaliser, pre-tokeniser and ``</w>`` word-end
    convention of ``transformers.CLIPTokenizer`` so the stock class loads it;
    the full byte alphabet is kept so unseen words still tokenise.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    t0 = time.time()
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tok = Tokenizer(models.BPE(unk_token=eos, end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        min_frequency=1,
        special_tokens=[bos, eos],
        end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    clip_tok = CLIPTokenizer(vocab=model["vocab"], merges=merges, bos_token=bos, eos_token=eos, pad_token=eos, unk_token=eos)
    clip_tok.model_max_length = cfg.max_length
    out = Path(work_dir) / "tokenizer"
    clip_tok.save_pretrained(out)
    # Round-trip through from_pretrained so what is saved is what is used.
    clip_tok = CLIPTokenizer.from_pretrained(out)
    longest = max(len(clip_tok(c).input_ids) for c in corpus[:5000])
    if longest > cfg.max_length:
        raise ValueError(f"captions need {longest} tokens > max_length {cfg.max_length}")
    _record(work_dir, "tokenizer", vocab_size=len(clip_tok), seconds=round(time.time() - t0, 1), longest_caption_tokens=longest)
    log(f"[tokenizer] vocab {len(clip_tok)}, longest caption {longest} tokens -> {out}")
    return clip_tok


def load_tokenizer(work_dir: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(Path(work_dir) / "tokenizer")


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


class CaptionEmbeddings:
    """The frozen text tower's output for each caption, computed once per distinct caption.

    The UNet stage draws its captions from a finite set (the shapes captions and their
    partial and empty forms, or a folder's own captions) and the tower never changes, so
    a step looks its captions up instead of tokenizing and encoding all of them again
    (``benchmarks/bench_unet_step.py`` measures what that saves). Bounded: past
    ``max_entries`` distinct captions the cache starts again, so a huge captioned folder
    costs at most ``max_entries`` embeddings of memory (16 x 128 floats each for the preset).
    """

    def __init__(self, text_encoder, tokenizer, device: torch.device | str = "cpu", max_entries: int = 20_000):
        self.text_encoder, self.tokenizer, self.device, self.max_entries = text_encoder, tokenizer, torch.device(device), max_entries
        self._by_caption: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._by_caption)

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(c for c in captions if c not in self._by_caption))
        if missing:
            if len(self._by_caption) + len(missing) > self.max_entries:
                self._by_caption.clear()
                missing = list(dict.fromkeys(captions))
            hidden = self.text_encoder(tokenize(self.tokenizer, missing).to(self.device))[0]
            self._by_caption.update(zip(missing, hidden))
        return torch.stack([self._by_caption[c] for c in captions])


# --------------------------------------------------------------------------
# 2. CLIP (contrastive)


def clip_config(cfg: TrainConfig, tokenizer):
    from transformers import CLIPConfig

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
    from transformers import CLIPImageProcessor, CLIPModel

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
            log(f"[clip] step {step + 1} zero-shot {_fmt(clip_zero_shot_held_out(model, tokenizer, cfg, 200))}")
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
    info: dict[str, Any] = {"steps": total, "batch": cfg.clip_batch, "seconds": round(time.time() - t0, 1), **_loss_summary(progress.losses)}
    if data.procedural:
        info["zero_shot"] = clip_zero_shot_held_out(model, tokenizer, cfg, 500)
        log(f"[clip] held-out zero-shot accuracy {_fmt(info['zero_shot'])}")
    _record(work_dir, "clip", **info)
    return model


def clip_zero_shot_held_out(model, tokenizer, cfg: TrainConfig, count: int) -> dict[str, float]:
    images, specs = shapes.generate(count, HELD_OUT_SEED + cfg.seed)
    was_training = model.training
    model.eval()
    result = evaluate.clip_zero_shot(model, tokenizer, images, [s.attributes() for s in specs])
    model.train(was_training)
    return result


def _loss_summary(losses: list[float], window: int = 5) -> dict[str, float]:
    """Mean loss over the first and last ``window`` steps of this run (how tests see a loss fall)."""
    if not losses:
        return {}
    w = max(1, min(window, len(losses) // 3 or 1))
    return {"initial_loss": round(float(np.mean(losses[:w])), 5), "final_loss": round(float(np.mean(losses[-w:])), 5)}


def _fmt(d: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.1%}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


def load_clip(work_dir: Path):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(Path(work_dir) / "clip").eval()


def text_encoder_from_clip(clip_model):
    """The CLIP text tower as a standalone ``CLIPTextModel`` (the pipeline's text encoder)."""
    from transformers import CLIPTextModel

    encoder = CLIPTextModel(clip_model.config.text_config)
    tower = clip_model.text_model
    # transformers 5 nests a whole CLIPTextModel in CLIPModel; older versions a CLIPTextTransformer.
    if isinstance(tower, CLIPTextModel):
        encoder.load_state_dict(tower.state_dict())
    else:
        encoder.text_model.load_state_dict(tower.state_dict())
    return encoder.eval()


# --------------------------------------------------------------------------
# 3. VAE


def vae_model(cfg: TrainConfig):
    from diffusers import AutoencoderKL

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


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(shapes.to_unit_range(images))


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def vae_reconstruction_score(vae, count: int, seed: int, batch: int = 100) -> dict[str, float]:
    """The evaluator's accuracy on VAE reconstructions (posterior mode) of held-out dataset images."""
    images, specs = shapes.generate(count, seed)
    recon = []
    for i in range(0, count, batch):
        x = _to_tensor(images[i : i + batch])
        recon.append(_to_uint8(vae.decode(vae.encode(x).latent_dist.mode()).sample))
    return evaluate.score(np.concatenate(recon), [s.attributes() for s in specs])


@torch.no_grad()
def measure_scaling_factor(vae, data, seed: int, count: int = 512) -> float:
    """1 / std of the latents over dataset images, so scaled latents have unit variance (Rombach et al., 2022, sec. 4.3.2)."""
    images, _ = data.batch(np.random.default_rng(seed), count, p_empty=0.0)
    z = torch.cat([vae.encode(_to_tensor(images[i : i + 128])).latent_dist.sample() for i in range(0, count, 128)])
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
            x = _to_tensor(images)
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
                _save_vae_samples(vae, samples_dir / f"step-{step:07d}.png", cfg.seed)
        losses.extend(progress.losses)
        vae.eval()
        if not data.procedural:
            passed = True
            break
        result = vae_reconstruction_score(vae, cfg.vae_gate_images, HELD_OUT_SEED + cfg.seed + 1)
        gate_history.append({"step": step, **result})
        worst = min(result[a] for a in shapes.ATTRIBUTES)
        log(f"[vae] gate at step {step}: {_fmt(result)} (need every attribute >= {cfg.vae_gate:.0%})")
        if worst >= cfg.vae_gate:
            passed = True
            break
        if step + cfg.vae_extra_steps > cfg.vae_max_steps or cfg.vae_extra_steps <= 0:
            break
        target = step + cfg.vae_extra_steps
        save_checkpoint(work_dir, "vae", step, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "target": target, "gate_history": gate_history, "seconds": time.time() - t0})
    scaling = measure_scaling_factor(vae, data, cfg.seed + 7)
    vae.register_to_config(scaling_factor=scaling)
    _save_vae_samples(vae, samples_dir / "final.png", cfg.seed)
    out_dir = Path(work_dir) / "vae"
    vae.save_pretrained(out_dir)
    _record(work_dir, "vae", steps=step, batch=cfg.vae_batch, seconds=round(time.time() - t0, 1), **_loss_summary(losses), scaling_factor=scaling, gate=gate_history, gate_passed=passed)
    log(f"[vae] scaling factor {scaling:.4f}; gate {'passed' if passed else 'FAILED'} -> {out_dir}")
    if not passed and enforce_gate:
        raise RuntimeError(f"VAE reconstruction gate failed after {step} steps: {gate_history[-1]}")
    return vae


@torch.no_grad()
def _save_vae_samples(vae, path: Path, seed: int, count: int = 8) -> None:
    images, _ = shapes.generate(count, HELD_OUT_SEED + seed + 2)
    was = vae.training
    vae.eval()
    recon = _to_uint8(vae.decode(vae.encode(_to_tensor(images)).latent_dist.mode()).sample)
    vae.train(was)
    save_grid(np.concatenate([images, recon]), path, rows=2)


def save_grid(images: np.ndarray, path: Path, rows: int = 1) -> None:
    from PIL import Image

    n, h, w, _ = images.shape
    cols = math.ceil(n / rows)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = im
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def load_vae(work_dir: Path, prefer_decoder_finetune: bool = False):
    """The stage's VAE; with ``prefer_decoder_finetune`` the decoder-refined one when it exists
    (same encoder, so latents -- and a UNet trained on them -- are unchanged)."""
    from diffusers import AutoencoderKL

    refined = Path(work_dir) / "vae_decoder"
    if prefer_decoder_finetune and (refined / "config.json").exists():
        return AutoencoderKL.from_pretrained(refined).eval()
    return AutoencoderKL.from_pretrained(Path(work_dir) / "vae").eval()


def finetune_vae_decoder(cfg: TrainConfig, work_dir: Path, data, steps: int, resume: bool = False, gate_every: int = 300):
    """Keep training only the VAE decoder (encoder frozen) until the reconstruction gate passes.

    The latent space is fixed by the encoder, so this can run after (or
    beside) the UNet stage without invalidating it; export picks the result
    up from ``work_dir/vae_decoder``.
    """
    from diffusers import AutoencoderKL

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
        x = _to_tensor(images)
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
            log(f"[vae_decoder] gate at step {done}: {_fmt(result)}")
            vae.save_pretrained(out_dir)
            _save_vae_samples(vae, Path(work_dir) / "samples" / "vae_decoder" / f"step-{done:07d}.png", cfg.seed)
            _record(work_dir, "vae_decoder", steps=done, batch=cfg.vae_batch, seconds=round(time.time() - t0, 1), gate=history, gate_passed=min(result[a] for a in shapes.ATTRIBUTES) >= cfg.vae_gate)
            if min(result[a] for a in shapes.ATTRIBUTES) >= cfg.vae_gate:
                log(f"[vae_decoder] gate passed at step {done} -> {out_dir}")
                break
        # After the gate, so that a checkpoint at a gate step carries that gate's result.
        if done % cfg.checkpoint_every == 0 and done < steps:
            save_checkpoint(work_dir, "vae_decoder", done, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "gate_history": history, "seconds": time.time() - t0})
    return vae


# --------------------------------------------------------------------------
# 4. UNet


def unet_model(cfg: TrainConfig, cross_attention_dim: int, sample_size: int):
    from diffusers import UNet2DConditionModel

    # Attention (self + cross) at 8x8 and 4x4; at 16x16 it tripled the CPU step
    # time (measured), and the pooled text added to the time embedding already
    # conditions every ResNet block there.
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=cfg.vae_latent_channels,
        out_channels=cfg.vae_latent_channels,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers,
        down_block_types=tuple(cfg.unet_down_blocks),
        up_block_types=tuple(cfg.unet_up_blocks),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.unet_head_dim,
        addition_embed_type="text",
        addition_embed_type_num_heads=max(1, cross_attention_dim // 32),
        norm_num_groups=cfg.unet_norm_groups,
    )


# The last alpha-bar of the zero-terminal-SNR schedule: exactly 0 leaves the
# sigma-based samplers (Euler, LMS, Heun, DPM2...) an infinite starting sigma,
# so it is clamped to the value diffusers' own zero-SNR option uses.
TERMINAL_ALPHA_BAR = 2.0**-24


def zero_terminal_snr_betas(num_train_timesteps: int = 1000) -> list[float]:
    """Stable Diffusion's scaled-linear betas rescaled so the last step is (almost) pure noise.

    With the stock schedule x_T keeps sqrt(alpha_bar_T) = 0.068 of the image;
    averaged over a 16x16 latent the noise is only 1/16 as strong, so the
    background colour stays readable in x_T and the model learns to copy it
    from the noise instead of reading the prompt (Lin et al., 2024, "Common
    Diffusion Noise Schedules and Sample Steps are Flawed"). Shipped as
    ``trained_betas`` so every sampler, not only those with a zero-SNR option,
    uses exactly this schedule.
    """
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    base = torch.linspace(0.00085**0.5, 0.012**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    betas = rescale_zero_terminal_snr(base)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    betas[-1] = 1 - TERMINAL_ALPHA_BAR / alphas_cumprod[-2]
    return [float(b) for b in betas]


def noise_schedule(num_train_timesteps: int = 1000) -> dict[str, Any]:
    """The built-in model's noise schedule as scheduler config keys every sampler reads.

    v-prediction (Salimans & Ho, 2022) goes with the zero-terminal-SNR
    schedule: predicting the noise is meaningless where x_T is all noise. The
    timesteps are "trailing" so sampling starts at t = T, where training did.
    """
    return {
        "num_train_timesteps": num_train_timesteps,
        "trained_betas": zero_terminal_snr_betas(num_train_timesteps),
        "timestep_spacing": "trailing",
        "prediction_type": "v_prediction",
    }


def ddim_scheduler(num_train_timesteps: int = 1000):
    """The training schedule as a deterministic DDIM sampler (eta=0): noising in training, sample checks."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**noise_schedule(num_train_timesteps), clip_sample=False, set_alpha_to_one=False)


def sampling_scheduler(num_train_timesteps: int = 1000):
    """The exported model's default sampler (``presets.BUILTIN_SAMPLER``) on the training schedule,
    so a plain ``StableDiffusionPipeline.from_pretrained`` samples with ldmsite's default sampler."""
    from generation.diffusion.samplers import build_scheduler

    return build_scheduler(BUILTIN_SAMPLER, noise_schedule(num_train_timesteps))


@torch.no_grad()
def build_latent_bank(vae, cfg: TrainConfig, work_dir: Path, data) -> dict[str, Any]:
    """Encode a fixed set of training images once; training draws latents from their posteriors.

    On CPU the VAE encoder would cost as much per step as the UNet itself.
    Cached on disk so a resumed or repeated UNet stage skips it.
    """
    path = Path(work_dir) / "latent_bank.pt"
    n = cfg.unet_latent_bank
    if path.exists():
        bank = torch.load(path, weights_only=False)
        if bank["count"] == n and bank["seed"] == cfg.seed and bank.get("procedural") == data.procedural:
            return bank
    t0 = time.time()
    rng = np.random.default_rng([cfg.seed, 4242])
    if data.procedural:
        specs = [shapes.sample_spec(rng) for _ in range(n)]
        images = np.stack([shapes.render(s) for s in specs])
        attributes = [s.attributes() for s in specs]
        captions = None
    else:
        images, captions = data.images, data.captions
        attributes = None
        n = len(images)
    means, stds = [], []
    for i in range(0, n, 256):
        dist = vae.encode(_to_tensor(images[i : i + 256])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    bank = {"count": cfg.unet_latent_bank, "seed": cfg.seed, "procedural": data.procedural, "mean": torch.cat(means), "std": torch.cat(stds), "attributes": attributes, "captions": captions}
    torch.save(bank, path)
    log(f"[unet] encoded {n} images into the latent bank in {time.time() - t0:.0f}s")
    return bank


def _bank_captions(bank, idx: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> list[str]:
    if bank["attributes"] is not None:
        return [shapes.training_caption(bank["attributes"][i], rng, p_full=cfg.p_full, p_empty=cfg.p_empty) for i in idx]
    return ["" if rng.random() < cfg.p_empty else bank["captions"][i] for i in idx]


SAMPLE_PROMPTS = [
    "a large red circle in the center on a white background",
    "a large blue circle in the center on a white background",
    "a large red square in the center on a white background",
    "a large red circle in the center on a black background",
    "a small red circle in the center on a white background",
    "a large red circle on the left on a white background",
    "a yellow triangle",
    "a green square on a purple background",
]


def train_unet(cfg: TrainConfig, work_dir: Path, data, resume: bool = False):
    """Text-conditioned UNet on VAE latents (Rombach et al., 2022) with the DDPM objective (Ho et al., 2020).

    Per step: t ~ U{0..T-1}; x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps in
    closed form (Ho et al., eq. 4); the UNet predicts the noise in its
    v-parametrisation, v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans &
    Ho, 2022; eps and x_0 follow from v and x_t in closed form), with
    loss = ||v - v_theta(x_t, t, text)||^2 on the zero-terminal-SNR schedule of
    ``ddim_scheduler`` (plain noise MSE on Stable Diffusion's schedule left this
    model copying the background colour from the noise; docs/MODEL.md has the
    numbers). Captions are dropped to "" with ``p_empty`` for classifier-free
    guidance (Ho & Salimans, 2022). The frozen CLIP text tower embeds the captions.
    EMA weights are what gets exported.
    """
    tokenizer = load_tokenizer(work_dir)
    text_encoder = text_encoder_from_clip(load_clip(work_dir)).requires_grad_(False)
    vae = load_vae(work_dir).requires_grad_(False)
    scaling = vae.config.scaling_factor
    bank = build_latent_bank(vae, cfg, work_dir, data)
    n_bank = bank["mean"].shape[0]
    sample_size = bank["mean"].shape[-1]

    torch.manual_seed(cfg.seed + 2)
    # channels-last: the CPU convolution kernels run this UNet's step ~10% faster (measured).
    unet = unet_model(cfg, text_encoder.config.hidden_size, sample_size)
    if cfg.unet_init:
        _load_unet_init(unet, cfg.unet_init)
    device = torch.device(cfg.unet_device)
    unet = unet.to(device, memory_format=torch.channels_last)
    # The frozen text tower beside the UNet (on a GPU a copy; the sample checks use the CPU one),
    # each distinct caption encoded once.
    tower = text_encoder if device.type == "cpu" else copy.deepcopy(text_encoder).to(device)
    embed_captions = CaptionEmbeddings(tower, tokenizer, device)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    ema = EMA(unet, cfg.unet_ema)
    start, earlier = 0, 0.0
    if resume and (ckpt := latest_checkpoint(work_dir, "unet")):
        state = load_checkpoint(ckpt)
        unet.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        start, earlier = state["step"], state.get("seconds", 0.0)
        log(f"[unet] resumed from {ckpt} at step {start}")
    scheduler = ddim_scheduler(cfg.num_train_timesteps)
    total = cfg.unet_steps
    progress = Progress("unet", total, start, every=cfg.log_every)
    t0 = time.time() - earlier  # seconds count the whole stage, across resumes
    samples_dir = Path(work_dir) / "samples" / "unet"
    checks: list[dict] = read_json(Path(work_dir) / "unet_checks.json", []) if resume else []
    unet.train()
    for step in range(start, total):
        rng = step_rng(cfg.seed, "unet", step)
        idx = rng.integers(0, n_bank, size=cfg.unet_batch)
        captions = _bank_captions(bank, idx, rng, cfg)
        eps_z = torch.from_numpy(rng.standard_normal(bank["mean"][idx].shape).astype(np.float32))
        x0 = (bank["mean"][idx] + bank["std"][idx] * eps_z) * scaling
        t = torch.from_numpy(rng.integers(0, cfg.num_train_timesteps, size=cfg.unet_batch))
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        x0, noise, t = x0.to(device), noise.to(device), t.to(device)
        xt, target = noised_and_target(scheduler, x0, noise, t)
        xt = xt.contiguous(memory_format=torch.channels_last)
        cond = embed_captions(captions)
        for g in opt.param_groups:
            # Warm-up then constant: EMA does the averaging, and a run can be
            # extended with --resume --unet-steps N without a schedule jump.
            g["lr"] = cfg.unet_lr * min(1.0, (step + 1) / max(1, min(100, total // 10)))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.unet_bf16):
            pred = unet(xt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet, step)
        progress.update(step + 1, loss.item())
        done = step + 1
        if done % cfg.checkpoint_every == 0 and done < total:
            save_checkpoint(work_dir, "unet", done, {"model": unet.state_dict(), "optimizer": opt.state_dict(), "ema": ema.state_dict(), "seconds": time.time() - t0})
        if done % cfg.sample_every == 0 and done < total:
            check = _unet_sample_check(cfg, work_dir, unet, ema, vae, text_encoder, tokenizer, scheduler, done, samples_dir, data.procedural)
            if check:
                checks.append(check)
                write_json(Path(work_dir) / "unet_checks.json", checks)
            unet.train()
    ema.copy_to(unet)
    unet.eval().to("cpu", memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
    out_dir = Path(work_dir) / "unet"
    unet.save_pretrained(out_dir)
    check = _unet_sample_check(cfg, work_dir, unet, None, vae, text_encoder, tokenizer, scheduler, total, samples_dir, data.procedural)
    if check:
        checks.append(check)
        write_json(Path(work_dir) / "unet_checks.json", checks)
    _record(work_dir, "unet", steps=total, batch=cfg.unet_batch, seconds=round(time.time() - t0, 1), **_loss_summary(progress.losses), params=sum(p.numel() for p in unet.parameters()))
    log(f"[unet] done -> {out_dir}")
    return unet


def _load_unet_init(unet, init_dir: str) -> None:
    """Copy an exported UNet's weights into ``unet``; a different architecture is a clear error."""
    from diffusers import UNet2DConditionModel

    source = UNet2DConditionModel.from_pretrained(init_dir).state_dict()
    try:
        unet.load_state_dict(source)
    except RuntimeError as exc:
        raise SystemExit(f"--unet-init {init_dir}: its UNet does not match this preset's architecture ({str(exc).splitlines()[0]})") from None
    log(f"[unet] starting from the weights in {init_dir}")


@torch.no_grad()
def sample_latents(unet, text_encoder, tokenizer, scheduler, prompts: list[str], seeds: list[int], steps: int = 25, guidance: float = 7.5, sample_size: int = 16, channels: int = 4) -> torch.Tensor:
    """DDIM sampling with classifier-free guidance: the same maths as the stock pipeline, no pipeline object needed."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler.config)
    sched.set_timesteps(steps)
    cond = text_encoder(tokenize(tokenizer, prompts))[0]
    uncond = text_encoder(tokenize(tokenizer, [""] * len(prompts)))[0]
    latents = torch.cat(
        [torch.randn((1, channels, sample_size, sample_size), generator=torch.Generator("cpu").manual_seed(s)) for s in seeds]
    )
    latents = latents * sched.init_noise_sigma
    for t in sched.timesteps:
        model_in = torch.cat([latents, latents])
        eps = unet(model_in, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        e_u, e_c = eps.chunk(2)
        latents = sched.step(e_u + guidance * (e_c - e_u), t, latents).prev_sample
    return latents


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> np.ndarray:
    return _to_uint8(vae.decode(latents / vae.config.scaling_factor).sample)


def _unet_sample_check(cfg, work_dir, unet, ema, vae, text_encoder, tokenizer, scheduler, step, samples_dir, procedural) -> dict | None:
    """Sample images at an interval; on the shapes data also judge them (the early prompt-following check)."""
    t0 = time.time()
    model = unet
    if ema is not None:
        model = copy.deepcopy(unet).to("cpu")  # sampled on the CPU, beside the CPU text tower
        ema.copy_to(model)
    model.eval()
    size = unet.config.sample_size
    ch = unet.config.in_channels
    imgs = decode_latents(vae, sample_latents(model, text_encoder, tokenizer, scheduler, SAMPLE_PROMPTS, [cfg.seed] * len(SAMPLE_PROMPTS), steps=20, sample_size=size, channels=ch))
    save_grid(imgs, samples_dir / f"step-{step:07d}.png", rows=1)
    if not procedural:
        return None
    # Same seed, one word changed: the images must differ.
    diff = float(np.abs(imgs[0].astype(int) - imgs[1].astype(int)).mean())
    wanted = shapes.evaluation_prompts(32, 99)
    prompts = [shapes.caption(a) for a in wanted]
    gen = decode_latents(vae, sample_latents(model, text_encoder, tokenizer, scheduler, prompts, list(range(len(prompts))), steps=20, sample_size=size, channels=ch))
    result = evaluate.score(gen, wanted)
    log(f"[unet] check at step {step}: one-word change moves pixels by {diff:.1f}/255; 32 prompts: {_fmt(result)} ({time.time() - t0:.0f}s)")
    return {"step": step, "one_word_pixel_change": diff, **result}


def load_unet(work_dir: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(Path(work_dir) / "unet").eval()


# --------------------------------------------------------------------------
# 5. export


@torch.no_grad()
def fit_latent_preview(vae, data, seed: int, count: int = 256) -> dict:
    """Least-squares latent -> RGB factors for cheap step previews.

    Input: the *scaled* latents the sampler works on (VAE latent x
    scaling_factor); target: the VAE decoder's output average-pooled to the
    latent grid, in -1..1.
    """
    images, _ = data.batch(np.random.default_rng([seed, 77]), count, p_empty=0.0)
    x = _to_tensor(images)
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
    from diffusers import StableDiffusionPipeline

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
    _record(work_dir, "export", bytes=size, dtype=str(dtype).replace("torch.", ""), latent_preview_rmse=preview["fit_rmse"])
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
    import shutil

    if path.exists():
        shutil.rmtree(path)
