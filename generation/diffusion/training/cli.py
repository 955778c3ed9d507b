"""Command line of the training code: ``python -m generation.diffusion.training``.

Train the built-in model (all stages or some), or fine-tune an existing
Stable Diffusion pipeline's UNet on a folder of captioned images::

    python -m generation.diffusion.training --preset builtin --work-dir var/train/builtin \
        --export-dir generation/builtin_model
    python -m generation.diffusion.training --stages unet,export --resume ...
    python -m generation.diffusion.training --finetune path/to/sd-pipeline --data my_images/ \
        --output var/finetuned --steps 500

``main(argv)`` is what the Django ``train_ldm`` command wraps; ``build_parser()``
gives the argparse parser for embedding.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from generation.diffusion.training.presets import PRESETS, get_preset

STAGE_CHOICES = ("tokenizer", "clip", "vae", "vae_decoder", "unet", "export")
# vae_decoder (decoder-only refinement until the VAE gate passes) runs only when named.
DEFAULT_STAGES = ("tokenizer", "clip", "vae", "unet", "export")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="python -m generation.diffusion.training", description=__doc__.split("\n\n")[1])
    p.add_argument("--preset", default="builtin", choices=sorted(PRESETS), help="training configuration (default: builtin)")
    p.add_argument("--stages", default="all", help="comma-separated subset of tokenizer,clip,vae,vae_decoder,unet,export (default: all = all but vae_decoder)")
    p.add_argument("--work-dir", default="var/train/builtin", help="stage outputs, checkpoints and samples")
    p.add_argument("--export-dir", default=None, help="where the export stage writes the pipeline (default: WORK_DIR/pipeline)")
    p.add_argument("--data", default=None, help="a folder of images with same-named .txt captions, or with metadata.jsonl (default: the procedural shapes)")
    p.add_argument("--seed", type=int, default=None, help="master seed (default: the preset's, 0)")
    p.add_argument("--resume", action="store_true", help="continue each stage from its newest checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the preset's)")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--sample-every", type=int, default=None)
    p.add_argument("--clip-steps", type=int, default=None)
    p.add_argument("--vae-steps", type=int, default=None)
    p.add_argument("--vae-decoder-steps", type=int, default=900, help="steps of the optional vae_decoder stage")
    p.add_argument("--vae-max-steps", type=int, default=None, help="cap on VAE steps while its gate fails")
    p.add_argument("--unet-steps", type=int, default=None)
    p.add_argument("--unet-latent-bank", type=int, default=None, help="dataset images encoded once for the UNet stage")
    p.add_argument("--unet-batch", type=int, default=None)
    p.add_argument("--unet-lr", type=float, default=None)
    p.add_argument("--p-full", type=float, default=None, help="share of shapes captions that name all five attributes (default: the preset's); the rest are empty (classifier-free guidance) or partial")
    p.add_argument("--unet-device", choices=("cpu", "cuda"), default=None, help="train the UNet stage on this device (default cpu)")
    p.add_argument("--unet-init", default=None, metavar="UNET_DIR", help="start the UNet stage from this exported UNet (same architecture) with a fresh optimizer and EMA")
    p.add_argument("--guide-unet", default=None, metavar="UNET_DIR", help="export stage: save this UNet as the pipeline's guide_unet/ for autoguidance (a weaker version of the same model, e.g. the --unet-init a phase started from)")
    p.add_argument("--fp16", action="store_true", help="export fp16 weights (load them with torch_dtype=torch.float32 on a CPU)")
    p.add_argument("--no-vae-gate", action="store_true", help="continue to the UNet even if the VAE fails its reconstruction gate")
    ft = p.add_argument_group("fine-tuning an existing pipeline (needs --data)")
    ft.add_argument("--finetune", default=None, metavar="PIPELINE", help="diffusers StableDiffusionPipeline directory or hub id whose UNet is fine-tuned")
    ft.add_argument("--output", default=None, help="where the fine-tuned pipeline is saved (default: WORK_DIR/finetuned)")
    ft.add_argument("--steps", type=int, default=500)
    ft.add_argument("--batch-size", type=int, default=1)
    ft.add_argument("--lr", type=float, default=1e-5)
    ft.add_argument("--resolution", type=int, default=None, help="default: the pipeline's native resolution")
    ft.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="auto", help="auto: fp16 on CUDA, none on CPU")
    return p


def run(args: argparse.Namespace) -> dict:
    from generation.diffusion.training.common import seed_everything, set_threads

    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.finetune:
        from generation.diffusion.training.finetune import finetune_unet

        if not args.data:
            raise SystemExit("--finetune needs --data (a folder of captioned images)")
        set_threads(args.threads)
        out = finetune_unet(
            args.finetune,
            args.data,
            Path(args.output or work_dir / "finetuned"),
            work_dir=work_dir,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            resolution=args.resolution,
            seed=args.seed or 0,
            resume=args.resume,
            mixed_precision=args.mixed_precision,
            checkpoint_every=args.checkpoint_every or 100,
            sample_every=args.sample_every or 0,
        )
        return {"output": str(out)}

    # Imported here, not at the top: the parser (``--help``, the Django ``train_ldm`` command's
    # arguments) is built without loading torch, diffusers and transformers.
    from generation.diffusion.training.clip_stage import train_clip
    from generation.diffusion.training.common import log, record_stage, write_json
    from generation.diffusion.training.data import FolderData, ShapesData
    from generation.diffusion.training.export_stage import export_pipeline
    from generation.diffusion.training.tokenizer_stage import train_tokenizer
    from generation.diffusion.training.unet_stage import train_unet
    from generation.diffusion.training.vae_decoder_stage import finetune_vae_decoder
    from generation.diffusion.training.vae_stage import train_vae

    try:
        cfg = get_preset(args.preset).with_overrides(
            seed=args.seed,
            threads=args.threads,
            checkpoint_every=args.checkpoint_every,
            sample_every=args.sample_every,
            clip_steps=args.clip_steps,
            vae_steps=args.vae_steps,
            unet_steps=args.unet_steps,
            unet_batch=args.unet_batch,
            unet_lr=args.unet_lr,
            unet_init=args.unet_init,
            unet_latent_bank=args.unet_latent_bank,
            p_full=args.p_full,
            unet_device=args.unet_device,
        )
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.vae_steps is not None:
        cfg = cfg.with_overrides(vae_max_steps=max(cfg.vae_max_steps, args.vae_steps))
    if args.vae_max_steps is not None:
        cfg = cfg.with_overrides(vae_max_steps=args.vae_max_steps)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    data = FolderData(args.data, cfg.resolution, p_empty=cfg.p_empty) if args.data else ShapesData(cfg.p_full, cfg.p_empty)
    wanted = DEFAULT_STAGES if args.stages == "all" else tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = set(wanted) - set(STAGE_CHOICES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; choose from {','.join(STAGE_CHOICES)}")
    import torch

    if cfg.unet_device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--unet-device cuda: PyTorch sees no CUDA device on this machine")
    # Checked before any stage runs: with --stages all the UNet stage starts half an hour in.
    for flag, unet_dir in (("--unet-init", cfg.unet_init), ("--guide-unet", args.guide_unet)):
        if unet_dir and not (Path(unet_dir) / "config.json").is_file():
            raise SystemExit(f"{flag} {unet_dir}: no exported UNet there (no config.json)")
    write_json(work_dir / "config.json", {"preset": args.preset, "stages": list(wanted), "data": args.data, **cfg.as_dict()})
    timings = {}
    for stage in STAGE_CHOICES:
        if stage not in wanted:
            continue
        t0 = time.time()
        if stage == "tokenizer":
            train_tokenizer(cfg, work_dir, data.caption_corpus())
        elif stage == "clip":
            train_clip(cfg, work_dir, data, resume=args.resume)
        elif stage == "vae":
            train_vae(cfg, work_dir, data, resume=args.resume, enforce_gate=not args.no_vae_gate)
        elif stage == "vae_decoder":
            finetune_vae_decoder(cfg, work_dir, data, args.vae_decoder_steps, resume=args.resume)
        elif stage == "unet":
            train_unet(cfg, work_dir, data, resume=args.resume)
        elif stage == "export":
            export_pipeline(cfg, work_dir, Path(args.export_dir or work_dir / "pipeline"), data, fp16=args.fp16,
                            guide_unet=args.guide_unet)
        timings[stage] = round(time.time() - t0, 1)
        log(f"[{stage}] finished in {timings[stage]:.0f}s")
    record_stage(work_dir, "wall_clock", **{f"{k}_seconds": v for k, v in timings.items()})
    return timings


def main(argv: list[str] | None = None) -> dict:
    return run(build_parser().parse_args(argv))
