"""What the text conditioning costs in a UNet training step, with and without the caption cache.

    python benchmarks/bench_unet_step.py [--model generation/builtin_model] [--batches 64,256] [--steps 20] [--threads 2]

The UNet stage conditions each step on its captions' frozen-text-tower embeddings. Before
``unet_stage.CaptionEmbeddings`` every step tokenized and encoded all its captions; the cache encodes
each distinct caption once (the shapes captions form a finite set). For each batch size this
times, on the CPU, per step: the conditioning done both ways (the cache warmed by the same
number of earlier steps' captions, as in training), the tokenizing alone (host work on any
device), and the UNet's forward + backward + AdamW step, and prints the share of the step the
cache saves. It also prints how many distinct
captions the cache holds after those steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generation.diffusion import dataset as shapes  # noqa: E402
from generation.diffusion.training.clip_stage import load_clip, text_encoder_from_clip  # noqa: E402
from generation.diffusion.training.common import step_rng  # noqa: E402
from generation.diffusion.training.presets import get_preset  # noqa: E402
from generation.diffusion.training.tokenizer_stage import load_tokenizer, tokenize  # noqa: E402
from generation.diffusion.training.unet_stage import CaptionEmbeddings  # noqa: E402


def step_captions(step: int, batch: int, p_full: float, p_empty: float) -> list[str]:
    rng = step_rng(0, "unet", step)
    return [shapes.training_caption(shapes.sample_spec(rng), rng, p_full=p_full, p_empty=p_empty) for _ in range(batch)]


def ms_per_call(fn, calls: list) -> float:
    t0 = time.perf_counter()
    for args in calls:
        fn(*args)
    return (time.perf_counter() - t0) * 1000 / len(calls)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "generation" / "builtin_model"))
    p.add_argument("--batches", default="64,256")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warm-steps", type=int, default=500, help="earlier steps whose captions fill the cache first")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import UNet2DConditionModel

    cfg = get_preset("builtin")
    model = Path(args.model)
    tokenizer = load_tokenizer(model)
    tower = text_encoder_from_clip(load_clip(model)).requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(model / "unet").train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    size = unet.config.sample_size

    def uncached(captions):
        with torch.no_grad():
            return tower(tokenize(tokenizer, captions))[0]

    def unet_step(cond):
        b = cond.shape[0]
        xt = torch.randn(b, unet.config.in_channels, size, size).contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.mse_loss(unet(xt, torch.randint(0, 1000, (b,)), encoder_hidden_states=cond).sample, xt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    print(f"CPU, {torch.get_num_threads()} threads, p_full {cfg.p_full}, ms per step:")
    print("| batch | tokenize + text tower | of which tokenize | cache lookup | UNet fwd + bwd + AdamW | step saved |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in map(int, args.batches.split(",")):
        cache = CaptionEmbeddings(tower, tokenizer)
        for step in range(args.warm_steps):
            cache(step_captions(step, batch, cfg.p_full, cfg.p_empty))
        timed = [(step_captions(args.warm_steps + i, batch, cfg.p_full, cfg.p_empty),) for i in range(args.steps)]
        before = ms_per_call(uncached, timed)
        tokenizing = ms_per_call(lambda captions: tokenize(tokenizer, captions), timed)
        after = ms_per_call(cache, timed)
        conds = [(uncached(c),) for (c,) in timed[: max(3, args.steps // 4)]]
        unet_ms = ms_per_call(unet_step, conds)
        saved = (before - after) / (before + unet_ms)
        print(f"| {batch} | {before:.1f} | {tokenizing:.1f} | {after:.1f} | {unet_ms:.0f} | {saved:.1%} |", flush=True)
        print(f"  (distinct captions cached after {args.warm_steps + args.steps} steps: {len(cache)})")


if __name__ == "__main__":
    main()
