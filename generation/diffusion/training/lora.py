"""Train a LoRA for a Stable Diffusion pipeline's UNet on a folder of captioned images.

As diffusers' own ``examples/text_to_image/train_text_to_image_lora.py`` does it: PEFT LoRA
adapters (``LoraConfig(r, lora_alpha, init_lora_weights="gaussian", target_modules=["to_k",
"to_q", "to_v", "to_out.0"])``, ``unet.add_adapter``) on the UNet's attention layers, everything
else frozen, AdamW on the adapter weights only, the standard denoising loss on the model's own
noise schedule and prediction type (read from its scheduler config, as :mod:`.finetune` does:
the built-in model's v-prediction on zero-terminal-SNR betas, SD 1.x's epsilon). The data is a
folder of images with same-named ``.txt`` captions (or ``metadata.jsonl``; :mod:`.data`); every
caption carries the trigger word (put in front where a caption lacks it; an image without a
caption is captioned with the trigger alone). Images are encoded by the VAE once and captions by
the text encoder once.

Deterministic in ``seed``: the adapters' initial weights come from ``torch.manual_seed(seed)``
and each step's batch, latent sample, timesteps and noise from :func:`.common.step_rng`, a pure
function of (seed, step). So a run resumed from a checkpoint (adapter weights, optimizer state
and step, every ``checkpoint_every`` steps and when cancelled) ends exactly where an
uninterrupted run ends (tested, bit for bit on a CPU at a fixed torch thread count; another
thread count changes float rounding).

The result is a diffusers/PEFT-format LoRA safetensors (``get_peft_model_state_dict`` then
``convert_state_dict_to_diffusers``, written by ``save_lora_weights`` with its
``lora_adapter_metadata``), which :mod:`generation.diffusion.lora` reads, checks and applies, plus
ldmsite metadata: base model hash, trigger words, rank, alpha, steps, learning rate, seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from generation.diffusion.training.common import noised_and_target, step_rng
from generation.diffusion.training.data import IMAGE_EXTENSIONS, _load_image, read_folder

ADAPTER = "ldmsite_training"
TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
STAGE = "lora"

# Defaults measured on the built-in model (generation/builtin_model/README.md, "LoRA"): a plus
# sign learnt from 30 images in a few minutes on 2 CPU cores.
DEFAULT_RANK = 8
DEFAULT_STEPS = 2000
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_BATCH_SIZE = 8
DEFAULT_CHECKPOINT_EVERY = 50


@dataclass
class LoraTrainingResult:
    """What a run left: the LoRA file (None when cancelled before the end), this call's losses,
    the step it started from (0, or the checkpoint's), the steps done and the seconds it took."""

    path: Path | None
    losses: list[float]
    seconds: float
    start_step: int
    steps: int
    cancelled: bool = False
    truncated_captions: int = 0  # captions longer than the text encoder reads (their end is cut off)
    metadata: dict[str, str] = field(default_factory=dict)


def captioned_images(images_dir: str | Path, trigger: str) -> list[tuple[Path, str]]:
    """(image, caption) pairs of a folder, every caption with the trigger word in it."""
    root = Path(images_dir)
    try:
        pairs = read_folder(root)
    except ValueError:
        pairs = []
    if not (root / "metadata.jsonl").exists():  # images without a .txt are captioned by the trigger alone
        captioned = {path for path, _ in pairs}
        pairs += [(p, "") for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS and p not in captioned]
        pairs.sort(key=lambda pair: str(pair[0]))
    if not pairs:
        raise ValueError(f"no images in {root}")
    return [(path, with_trigger(caption, trigger)) for path, caption in pairs]


def with_trigger(caption: str, trigger: str) -> str:
    trigger = (trigger or "").strip()
    if not trigger or trigger.lower() in caption.lower():
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def _pipeline(model):
    """(pipeline, directory or None) for a model directory, a loaded pipeline or a LoadedModel."""
    if isinstance(model, (str, os.PathLike)):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None, requires_safety_checker=False,
                                                       torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return pipe, Path(model)
    pipe = getattr(model, "pipeline", model)
    directory = getattr(model, "path", None) or getattr(pipe, "name_or_path", None) or getattr(pipe.config, "_name_or_path", None)
    return pipe, Path(directory) if directory and Path(directory).is_dir() else None


def _base_hash(model, directory: Path | None) -> str:
    known = getattr(model, "content_hash", None) or getattr(model, "hash", None)
    if isinstance(known, str) and known:
        return known
    if directory is not None:
        from generation.diffusion.hashing import directory_content_hash

        return directory_content_hash(directory)
    return ""


def train_lora(
    model,
    images_dir: str | Path,
    *,
    trigger: str,
    output: str | Path | None = None,
    rank: int = DEFAULT_RANK,
    alpha: float | None = None,
    steps: int = DEFAULT_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    resume: bool = True,
    on_progress: Callable | None = None,
    sample_every: int = 0,
    sample_prompts: list[str] | None = None,
    sample_steps: int = 20,
    should_cancel: Callable[[], bool] | None = None,
    p_empty: float = 0.0,
    resolution: int | None = None,
    device: str | None = None,
) -> LoraTrainingResult:
    """Train a LoRA of ``rank`` (scale ``alpha / rank``; ``alpha`` defaults to ``rank``) on the
    images of ``images_dir`` and save it to ``output`` (default ``<images_dir>.safetensors``).

    ``model``: a model directory, a diffusers pipeline or a loaded model (``.pipeline``); a
    pipeline passed in gets the training adapter only for the run (deleted after) -- so never one
    that serves generation jobs meanwhile, and one in fp32 (a training job loads its own copy
    from the directory).
    ``on_progress(step, total, loss, eta_seconds, samples)`` after every step; ``samples`` is a
    list of PIL images every ``sample_every`` steps (``sample_prompts``, default the first four
    captions, seeded), else None. ``should_cancel()`` is asked after every step: when it says
    yes the run checkpoints (with ``checkpoint_dir``) and returns ``cancelled=True``. With
    ``checkpoint_dir`` and ``resume``, a call continues from the newest checkpoint written with
    the same data and settings (another ``steps`` is allowed).
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    if rank < 1 or steps < 1 or batch_size < 1 or not learning_rate > 0:
        raise ValueError("rank, steps and batch size must be at least 1 and the learning rate positive")
    alpha = float(alpha if alpha is not None else rank)
    t_start = time.time()
    pipe, directory = _pipeline(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae, text_encoder, tokenizer, unet = pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = resolution or unet.config.sample_size * vae_scale
    pairs = captioned_images(images_dir, trigger)
    images = np.stack([_load_image(path, resolution) for path, _ in pairs])
    captions = [caption for _, caption in pairs]

    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    devices = {name: next(module.parameters()).device for name, module in
               (("vae", vae), ("text_encoder", text_encoder), ("unet", unet))}
    vae.to(device)
    text_encoder.to(device)
    unet.to(device)
    with torch.no_grad():
        x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2).to(device)
        dists = [vae.encode(x[i : i + 8]).latent_dist for i in range(0, len(x), 8)]
        lat_mean = torch.cat([d.mean for d in dists])
        lat_std = torch.cat([d.std for d in dists])
        texts = sorted(set(captions) | {""})
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        encoded = text_encoder(ids)[0]
        embedding = {text: encoded[i] for i, text in enumerate(texts)}
        lengths = tokenizer(captions, truncation=False).input_ids
        truncated = sum(len(ids) > tokenizer.model_max_length for ids in lengths)
    scaling = vae.config.scaling_factor

    fingerprint = _fingerprint(captions, images, rank, alpha, learning_rate, batch_size, seed, p_empty, resolution)
    was_training = unet.training
    unet.requires_grad_(False)
    if ADAPTER in (getattr(unet, "peft_config", None) or {}):
        unet.delete_adapters(ADAPTER)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=TARGET_MODULES),
                     adapter_name=ADAPTER)
    unet.set_adapter(ADAPTER)
    params = {name: p for name, p in unet.named_parameters() if ADAPTER in name}
    for p in params.values():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(list(params.values()), lr=learning_rate, weight_decay=1e-2)

    checkpoints = Path(checkpoint_dir) if checkpoint_dir else None
    start = 0
    if checkpoints and resume and (found := _latest(checkpoints, fingerprint)):
        state = torch.load(found, map_location="cpu", weights_only=False)
        with torch.no_grad():
            for name, value in state["adapter"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        start = min(int(state["step"]), steps)

    losses: list[float] = []
    cancelled = False
    step = start
    t_loop = time.time()
    try:
        unet.train()
        for step in range(start, steps):
            rng = step_rng(seed, STAGE, step)
            idx = rng.integers(0, len(captions), size=batch_size)
            texts = ["" if p_empty and rng.random() < p_empty else captions[i] for i in idx]
            eps_z = torch.from_numpy(rng.standard_normal(tuple(lat_mean[idx].shape)).astype(np.float32)).to(device)
            x0 = (lat_mean[idx] + lat_std[idx] * eps_z) * scaling
            t = torch.from_numpy(rng.integers(0, noise_scheduler.config.num_train_timesteps, size=batch_size)).to(device)
            noise = torch.from_numpy(rng.standard_normal(tuple(x0.shape)).astype(np.float32)).to(device)
            xt, target = noised_and_target(noise_scheduler, x0, noise, t)
            cond = torch.stack([embedding[text] for text in texts])
            pred = unet(xt, t, encoder_hidden_states=cond).sample
            loss = F.mse_loss(pred.float(), target.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            optimizer.step()
            losses.append(loss.item())
            done = step + 1
            if checkpoints and checkpoint_every and done % checkpoint_every == 0 and done < steps:
                _save_checkpoint(checkpoints, done, params, optimizer, fingerprint)
            samples = None
            if sample_every and (done % sample_every == 0 or done == steps):
                samples = _samples(pipe, sample_prompts or captions[:4], seed, sample_steps)
                unet.train()
            if on_progress is not None:
                rate = (done - start) / max(time.time() - t_loop, 1e-9)
                on_progress(done, steps, losses[-1], (steps - done) / rate, samples)
            if should_cancel is not None and done < steps and should_cancel():
                cancelled = True
                if checkpoints:
                    _save_checkpoint(checkpoints, done, params, optimizer, fingerprint)
                break
        metadata = {}
        path = None
        if not cancelled:
            from diffusers.utils import convert_state_dict_to_diffusers

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER))
            layers = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in layers.items()}
            metadata = {
                "ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": f"{alpha:g}",
                "ss_steps": str(steps), "ss_learning_rate": f"{learning_rate:g}", "ss_batch_size": str(batch_size),
                "ss_seed": str(seed), "ss_num_train_images": str(len(captions)),
                "ss_tag_frequency": json.dumps({"images": {trigger: len(captions)}}),
                "ldmsite_trigger_words": trigger, "ldmsite_base_model_hash": _base_hash(model, directory),
                "ldmsite_base_model": directory.name if directory else "", "ldmsite_rank": str(rank),
                "ldmsite_alpha": f"{alpha:g}", "ldmsite_steps": str(steps),
                "ldmsite_learning_rate": f"{learning_rate:g}", "ldmsite_batch_size": str(batch_size),
                "ldmsite_seed": str(seed), "ldmsite_target_modules": ",".join(TARGET_MODULES),
            }
            path = Path(output) if output else Path(str(Path(images_dir).resolve()) + ".safetensors")
            _write_lora(pipe, layers, unet.peft_config[ADAPTER], metadata, path)
    finally:
        unet.delete_adapters(ADAPTER)
        unet.requires_grad_(False)
        unet.train(was_training)
        vae.to(devices["vae"])
        text_encoder.to(devices["text_encoder"])
        unet.to(devices["unet"])
    return LoraTrainingResult(path=path, losses=losses, seconds=time.time() - t_start, start_step=start,
                              steps=step + 1 if losses else start, cancelled=cancelled, truncated_captions=truncated,
                              metadata=metadata)


def _write_lora(pipe, layers, config, metadata: dict[str, str], path: Path) -> None:
    """diffusers' ``save_lora_weights`` (its keys and ``lora_adapter_metadata``), plus ldmsite's metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    config_dict = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config_dict.items()}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        type(pipe).save_lora_weights(tmp, unet_lora_layers=layers, weight_name="lora.safetensors",
                                     unet_lora_adapter_metadata=config_dict)
        written = Path(tmp) / "lora.safetensors"
        with safe_open(str(written), framework="pt") as handle:
            own = dict(handle.metadata() or {})
        tensors = load_file(str(written))
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={**own, **metadata})
    os.replace(partial, path)


@torch.no_grad()
def _samples(pipe, prompts: list[str], seed: int, steps: int) -> list:
    pipe.unet.eval()
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    return list(pipe(list(prompts), num_inference_steps=steps, generator=generators).images)


def _fingerprint(captions, images, rank, alpha, lr, batch_size, seed, p_empty, resolution) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([captions, rank, alpha, lr, batch_size, seed, p_empty, resolution]).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


def _save_checkpoint(directory: Path, step: int, params, optimizer, fingerprint: str, keep: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"lora-step-{step:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "fingerprint": fingerprint, "torch_rng": torch.get_rng_state(),
                "adapter": {name: p.detach().cpu().clone() for name, p in params.items()},
                "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, path)
    for old in sorted(directory.glob("lora-step-*.pt"))[:-keep]:
        old.unlink()
    return path


def _latest(directory: Path, fingerprint: str) -> Path | None:
    """The newest checkpoint of a run with this data and these settings."""
    for path in sorted(directory.glob("lora-step-*.pt"), reverse=True) if directory.is_dir() else []:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # a torn file from a killed run: try the one before
            continue
        if state.get("fingerprint") == fingerprint:
            return path
    return None
