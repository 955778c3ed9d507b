"""Measure a LoRA trained on the built-in model to draw a new shape (issue 27, item 5).

    .venv/bin/python benchmarks/eval_lora.py --lora var/plsgn.safetensors [--trigger plsgn]
        [--shape plus] [--prompts 100] [--prompt-seed 0] [--steps 25] [--guidance 1.5]
        [--autoguidance 1.0] [--seed 1000] [--weights 1,0.8] [--new-shape-only] [--threads N]
        [--model generation/builtin_model] [--out var/eval_lora]

The LoRA is applied as a job applies it (``generation.diffusion.lora.use_loras`` on the model
the engine loads: ``load_lora_weights`` then ``set_adapters`` with the weight), and the images
are made by the stock ``StableDiffusionPipeline`` batched on that model's modules, with the
built-in model's defaults (Euler Karras, 25 steps, guidance 1.5, autoguidance 1.0 through the
engine's ``AutoguidedUNet`` -- the guide UNet has no LoRA, as in a job), prompt i with seed
``--seed + i``, judged by ``generation.diffusion.evaluate``. Rows:

- new shape, trigger word, LoRA at weight 1 / 0.8 / not loaded (baseline, 0% expected);
- the training shapes (circle, square, triangle; ``--prompts`` fully specified prompts, no
  trigger word) with the LoRA not loaded, loaded at weight 0, and at weight 1.

Writes ``results.json``, ``table.md`` and grids under ``--out``; prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generation.diffusion import dataset as shapes  # noqa: E402
from generation.diffusion import evaluate  # noqa: E402
from generation.diffusion.autoguidance import AutoguidedUNet  # noqa: E402
from generation.diffusion.lora import use_loras  # noqa: E402
from generation.diffusion.samplers import build_scheduler  # noqa: E402
from generation.diffusion.training.presets import (BUILTIN_AUTOGUIDANCE_SCALE, BUILTIN_GUIDANCE_SCALE,  # noqa: E402
                                                   BUILTIN_SAMPLER)
from benchmarks.eval_builtin_model import save_grid  # noqa: E402

ATTRIBUTES = ("shape", "color", "background", "size", "position")


def images_for(model, prompts: list[str], seed: int, steps: int, guidance: float, autoguidance: float,
               sampler: str, batch_size: int = 25) -> list[np.ndarray]:
    from diffusers import StableDiffusionPipeline

    base = model.pipeline
    unet = base.unet
    if autoguidance > 0 and model.guide_unet is not None:
        unet = AutoguidedUNet(base.unet, model.guide_unet, autoguidance, guidance)
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet,
                                   scheduler=build_scheduler(sampler, base.scheduler.config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            generators = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(chunk))]
            result = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                          output_type="np")
            out.extend(evaluate.as_uint8(result.images))
    return out


def rates(images: list[np.ndarray], wanted: list[dict]) -> dict:
    judged = [evaluate.judge(im) for im in images]
    row = {a: float(np.mean([j[a] == w[a] for j, w in zip(judged, wanted)])) for a in ATTRIBUTES}
    row["all five"] = float(np.mean([all(j[a] == w[a] for a in ATTRIBUTES) for j, w in zip(judged, wanted)]))
    got = [j["shape"] for j in judged]
    row["judged shapes"] = {str(s): got.count(s) for s in sorted(set(got), key=str)}
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lora", required=True)
    p.add_argument("--trigger", default="plsgn")
    p.add_argument("--shape", default="plus")
    p.add_argument("--model", default=str(ROOT / "generation" / "builtin_model"))
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--prompt-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=BUILTIN_GUIDANCE_SCALE)
    p.add_argument("--autoguidance", type=float, default=BUILTIN_AUTOGUIDANCE_SCALE)
    p.add_argument("--sampler", default=BUILTIN_SAMPLER)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--weights", default="1,0.8", help="LoRA weights for the new shape's rows")
    p.add_argument("--new-shape-only", action="store_true", help="only the new shape's rows with the LoRA (for comparing settings)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=str(ROOT / "var" / "eval_lora"))
    args = p.parse_args(argv)

    from generation.diffusion.loading import load_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_pipeline(args.model, dtype="fp32")
    new = shapes.evaluation_prompts(args.prompts, args.prompt_seed, shapes=(args.shape,))
    old = shapes.evaluation_prompts(args.prompts, args.prompt_seed)
    new_prompts = [f"{args.trigger}, {shapes.caption(w)}" for w in new]
    old_prompts = [shapes.caption(w) for w in old]
    gen = dict(seed=args.seed, steps=args.steps, guidance=args.guidance, autoguidance=args.autoguidance,
               sampler=args.sampler)
    rows: list[tuple[str, dict]] = []

    def run(label: str, prompts, wanted, loras, grid: str):
        t0 = time.time()
        with use_loras(model, loras):
            images = images_for(model, prompts, **gen)
        row = rates(images, wanted)
        row["seconds"] = round(time.time() - t0, 1)
        row["prompts"] = len(prompts)
        rows.append((label, row))
        save_grid(images[:100], out / grid)
        print(f"{label}: {format_row(row)}", flush=True)

    for weight in [float(w) for w in args.weights.split(",") if w.strip()]:
        run(f"{args.shape}, trigger word, LoRA weight {weight:g}", new_prompts, new, [(args.lora, weight)],
            f"{args.shape}_lora_{weight:g}.png")
    if args.new_shape_only:
        print(format_table(rows))
        return {"rows": dict(rows)}
    run(f"{args.shape}, trigger word, no LoRA", new_prompts, new, [], f"{args.shape}_no_lora.png")
    run("circle/square/triangle, LoRA not loaded", old_prompts, old, [], "base_no_lora.png")
    run("circle/square/triangle, LoRA weight 0", old_prompts, old, [(args.lora, 0.0)], "base_lora_0.png")
    run("circle/square/triangle, LoRA weight 1 (no trigger)", old_prompts, old, [(args.lora, 1.0)], "base_lora_1.png")

    table = format_table(rows)
    print(table)
    result = {"args": vars(args), "rows": {label: row for label, row in rows}}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "table.md").write_text(table + "\n")
    return result


def format_row(row: dict) -> str:
    return " ".join(f"{a} {row[a]:.0%}" for a in (*ATTRIBUTES, "all five")) + f" judged {row['judged shapes']}"


def format_table(rows) -> str:
    lines = ["| prompts | n | shape | colour | background | size | position | all five | judged as |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, row in rows:
        judged = ", ".join(f"{k} {v}" for k, v in row["judged shapes"].items())
        lines.append(f"| {label} | {row['prompts']} | {row['shape']:.0%} | {row['color']:.0%} | {row['background']:.0%} "
                     f"| {row['size']:.0%} | {row['position']:.0%} | {row['all five']:.0%} | {judged} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
