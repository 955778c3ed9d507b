"""Stage 4, the UNet: text-conditioned denoising on the VAE's latents, with EMA and sample checks."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel

from generation.diffusion import dataset as shapes
from generation.diffusion import evaluate
from generation.diffusion.training.clip_stage import load_clip, text_encoder_from_clip
from generation.diffusion.training.common import (EMA, Progress, format_metrics, latest_checkpoint, load_checkpoint,
                                                  log, loss_summary, noised_and_target, read_json, record_stage,
                                                  save_checkpoint, step_rng, write_json)
from generation.diffusion.training.images import save_grid, to_tensor, to_uint8
from generation.diffusion.training.presets import TrainConfig
from generation.diffusion.training.schedule import ddim_scheduler
from generation.diffusion.training.tokenizer_stage import load_tokenizer, tokenize
from generation.diffusion.training.vae_stage import load_vae


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


def unet_model(cfg: TrainConfig, cross_attention_dim: int, sample_size: int):
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
        dist = vae.encode(to_tensor(images[i : i + 256])).latent_dist
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
    record_stage(work_dir, "unet", steps=total, batch=cfg.unet_batch, seconds=round(time.time() - t0, 1), **loss_summary(progress.losses), params=sum(p.numel() for p in unet.parameters()))
    log(f"[unet] done -> {out_dir}")
    return unet


def _load_unet_init(unet, init_dir: str) -> None:
    """Copy an exported UNet's weights into ``unet``; a different architecture is a clear error."""
    source = UNet2DConditionModel.from_pretrained(init_dir).state_dict()
    try:
        unet.load_state_dict(source)
    except RuntimeError as exc:
        raise SystemExit(f"--unet-init {init_dir}: its UNet does not match this preset's architecture ({str(exc).splitlines()[0]})") from None
    log(f"[unet] starting from the weights in {init_dir}")


@torch.no_grad()
def sample_latents(unet, text_encoder, tokenizer, scheduler, prompts: list[str], seeds: list[int], steps: int = 25, guidance: float = 7.5, sample_size: int = 16, channels: int = 4) -> torch.Tensor:
    """DDIM sampling with classifier-free guidance: the same maths as the stock pipeline, no pipeline object needed."""
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
    return to_uint8(vae.decode(latents / vae.config.scaling_factor).sample)


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
    log(f"[unet] check at step {step}: one-word change moves pixels by {diff:.1f}/255; 32 prompts: {format_metrics(result)} ({time.time() - t0:.0f}s)")
    return {"step": step, "one_word_pixel_change": diff, **result}


def load_unet(work_dir: Path):
    return UNet2DConditionModel.from_pretrained(Path(work_dir) / "unet").eval()
