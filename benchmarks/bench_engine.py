"""Benchmark of the diffusion engine (not a test: it prints numbers, it does not pass or fail).

    .venv/bin/python benchmarks/bench_engine.py            # everything (~10 min on 2 CPU cores)
    .venv/bin/python benchmarks/bench_engine.py --quick    # fewer repeats, no bf16 SD1.5 step
    .venv/bin/python benchmarks/bench_engine.py --model generation/builtin_model

Prints, on the machine it runs on:

1. engine time / raw diffusers time for the same job (target <= 1.02), without and with
   per-step previews, on the built-in model (or, until it is trained, a random model of the
   built-in model's architecture, built with the training code's own constructors);
2. preview cost per step as a share of the step, on that model and on an SD1.5-sized UNet
   (``UNet2DConditionModel()`` defaults with cross_attention_dim=768, random weights);
3. CLIP-guidance cost factor (guided time / unguided time) for every-N in {1, 2, 4}
   within the default 0.2-0.8 window, and every step over the whole schedule;
4. seconds per step of the SD1.5-sized UNet at 512x512 (64x64 latents, CFG batch of 2) in fp32 and bf16.

Timings interleave the variants being compared and report medians, because other processes
share the CPU; the machine (CPU model, cores, hardware bf16) is printed first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from generation.diffusion import (choose_device_and_dtype, generate, load_pipeline,  # noqa: E402
                                  validate_request)
from generation.diffusion.engine import predict_x0  # noqa: E402
from generation.diffusion.precision import cpu_bf16_flags  # noqa: E402
from generation.diffusion.preview import SD1_BIAS, SD1_FACTORS, LatentPreview, latents_to_preview  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402

PROMPT = "a red circle on a blue background"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def min_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def builtin_size_model(directory: Path) -> Path:
    """A random-weight pipeline with the built-in model's architecture (training presets)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel

    from generation.diffusion.training.clip_stage import clip_config, text_encoder_from_clip
    from generation.diffusion.training.presets import get_preset
    from generation.diffusion.training.schedule import sampling_scheduler
    from generation.diffusion.training.unet_stage import unet_model
    from generation.diffusion.training.vae_stage import vae_model
    from tests.generation.diffusion.tiny import build_tiny_tokenizer

    cfg = get_preset("builtin")
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    tokenizer.model_max_length = cfg.max_length
    clip = CLIPModel(clip_config(cfg, tokenizer)).eval()
    vae = vae_model(cfg)
    latent = cfg.resolution // 2 ** (len(cfg.vae_channels) - 1)
    unet = unet_model(cfg, cfg.clip_hidden, latent)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder_from_clip(clip), tokenizer=tokenizer,
                                   unet=unet, scheduler=sampling_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(directory)
    clip.save_pretrained(directory / "clip")
    tokenizer.save_pretrained(directory / "clip")
    return directory


def bench_engine_overhead(model, steps: int, repeats: int) -> dict:
    request = validate_request({"prompt": PROMPT, "steps": steps, "seed": 1, "sampler": "DPM++ 2M Karras"},
                               model.limits)
    pipe = model.pipeline
    from generation.diffusion.samplers import SAMPLERS

    def raw():
        pipe.scheduler = SAMPLERS[request.sampler].build(model.scheduler_config)
        pipe(request.prompt, height=request.height, width=request.width, num_inference_steps=request.steps,
             guidance_scale=request.guidance_scale, generator=[torch.Generator().manual_seed(request.seed)])

    previews = []

    plain = []

    def engine_plain():
        plain.append(generate(model, request).timings)

    def engine_preview():
        result = generate(model, request, on_progress=lambda progress: progress.preview, preview_size=256)
        previews.append(result.timings)

    for fn in (raw, engine_plain, engine_preview):  # warm-up (first-call kernel setup)
        fn()
    previews.clear()
    wall = {"raw": [], "engine": [], "engine+preview": []}
    cpu = {"raw": [], "engine": [], "engine+preview": []}
    scoring = []
    for _ in range(repeats):
        for name, fn in (("raw", raw), ("engine", engine_plain), ("engine+preview", engine_preview)):
            started, started_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
        scoring.append(previews[-1]["clip_score"])

    def ratio(times, name):  # median of same-round ratios: cancels slow drifts in machine load
        return statistics.median(e / r for e, r in zip(times[name], times["raw"]))

    # The engine's own time, measured inside the run (immune to other processes' load).
    overhead = statistics.median(t["engine_overhead"] for t in plain)
    overhead_preview = statistics.median(t["engine_overhead"] + t["preview"] for t in previews)
    raw_cpu = statistics.median(cpu["raw"])
    preview_per_step = statistics.median(t["preview"] / steps for t in previews)
    step = statistics.median(t["denoise"] / steps for t in previews)
    return {
        "size": f"{request.width}x{request.height}", "steps": steps,
        "raw_s": statistics.median(wall["raw"]), "raw_cpu_s": statistics.median(cpu["raw"]),
        "engine_ratio": ratio(wall, "engine"), "engine_preview_ratio": ratio(wall, "engine+preview"),
        "engine_cpu_ratio": ratio(cpu, "engine"), "engine_preview_cpu_ratio": ratio(cpu, "engine+preview"),
        "clip_score_ms": statistics.median(scoring) * 1000,
        "overhead_ms": overhead * 1000, "overhead_pct": 100 * overhead / raw_cpu,
        "overhead_preview_ms": overhead_preview * 1000, "overhead_preview_pct": 100 * overhead_preview / raw_cpu,
        "step_s": step, "preview_ms": preview_per_step * 1000, "preview_pct": 100 * preview_per_step / step,
    }


def bench_clip_guidance(model, steps: int, repeats: int) -> list[tuple[str, float, float, int]]:
    # DDIM: on the built-in model's zero-terminal-SNR schedule the guidance window covers only the
    # steps at or below sigma 14.6, 22 of DDIM's 25 but 7 of a Karras sampler's, so DDIM keeps the
    # default setting at 4 guided steps, as on a Stable Diffusion schedule.
    base = {"prompt": PROMPT, "steps": steps, "seed": 3, "sampler": "DDIM"}
    settings = [("off", {}),
                ("every 4, window 0.2-0.8", {"clip_guidance_every": 4}),
                ("every 2, window 0.2-0.8", {"clip_guidance_every": 2}),
                ("every 1, window 0.2-0.8", {"clip_guidance_every": 1}),
                ("every 1, window 0-1", {"clip_guidance_every": 1, "clip_guidance_start": 0.0,
                                         "clip_guidance_end": 1.0})]
    requests = []
    for label, extra in settings:
        scale = 0 if label == "off" else 200
        requests.append((label, validate_request({**base, **extra, "clip_guidance_scale": scale}, model.limits)))
    factors, results = cost_factors(model, requests, repeats)
    return [(label, wall, cpu, len(results[label].metadata[0]["clip_guided_steps"]))
            for label, (wall, cpu) in factors.items()]


def bench_autoguidance(model, steps: int, repeats: int) -> list[tuple[str, float, float]]:
    """Cost of autoguidance: the guide UNet runs once more per step on the conditional half."""
    base = {"prompt": PROMPT, "steps": steps, "seed": 5, "sampler": "Euler Karras"}
    settings = [("guidance 1.5, off", {"guidance_scale": 1.5, "autoguidance_scale": 0}),
                ("guidance 1.5, autoguidance 1.0", {"guidance_scale": 1.5, "autoguidance_scale": 1.0}),
                ("guidance 1 (no CFG), off", {"guidance_scale": 1.0, "autoguidance_scale": 0}),
                ("guidance 1 (no CFG), autoguidance 1.5", {"guidance_scale": 1.0, "autoguidance_scale": 1.5})]
    requests = [(label, validate_request({**base, **extra}, model.limits)) for label, extra in settings]
    factors, _ = cost_factors(model, requests, repeats)
    return [(label, wall, cpu) for label, (wall, cpu) in factors.items()]


def cost_factors(model, requests, repeats: int):
    """Time each (label, request) ``repeats`` times, interleaved; return each later request's wall and
    CPU time over the first one's (medians of same-round ratios, which cancel slow load drifts),
    and each request's last result."""
    for _, request in requests:  # warm-up (first-call kernel setup of each path)
        generate(model, request)
    wall: dict[str, list[float]] = {label: [] for label, _ in requests}
    cpu: dict[str, list[float]] = {label: [] for label, _ in requests}
    results = {}
    for _ in range(repeats):
        for label, request in requests:
            started, started_cpu = time.perf_counter(), time.process_time()
            results[label] = generate(model, request)
            wall[label].append(time.perf_counter() - started)
            cpu[label].append(time.process_time() - started_cpu)
    baseline = requests[0][0]

    def factor(times, label):
        return statistics.median(g / o for g, o in zip(times[label], times[baseline]))

    return {label: (factor(wall, label), factor(cpu, label)) for label, _ in requests[1:]}, results


def sd15_unet(dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768).eval().requires_grad_(False)
    return unet if dtype == torch.float32 else unet.to(dtype)


def bench_sd15_step(dtype: torch.dtype, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) per UNet step."""
    unet = sd15_unet(dtype)
    latents = torch.randn(2, 4, 64, 64, dtype=dtype)
    context = torch.randn(2, 77, 768, dtype=dtype)
    wall, cpu = [], []
    with torch.no_grad():
        if warm_up:
            unet(latents, 500, encoder_hidden_states=context)
        for _ in range(repeats):
            started, started_cpu = time.perf_counter(), time.process_time()
            unet(latents, 500, encoder_hidden_states=context)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
    del unet
    return statistics.median(wall), statistics.median(cpu)


def bench_sd15_preview(repeats: int = 50) -> dict:
    """The per-step preview work at SD1.5 size: x0 from the noise prediction, projection, PIL image."""
    preview = LatentPreview.from_lists(SD1_FACTORS, SD1_BIAS, "sd1")
    sample = torch.randn(1, 4, 64, 64)
    noise = torch.randn(1, 4, 64, 64)

    def work(size):
        x0 = predict_x0(noise, sample, 3.0, False, "epsilon")
        latents_to_preview(preview, x0, size)

    work(256)
    # Sub-millisecond work: the minimum over many runs is the cost; a median catches preemptions.
    return {"latent_ms": min_time(lambda: work(None), repeats) * 1000,
            "256_ms": min_time(lambda: work(256), repeats) * 1000}


def bench_model(args, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        source = args.model
        builtin = REPO / "generation" / "builtin_model"
        if source is None and (builtin / "model_index.json").is_file():
            source = str(builtin)
        label = source or "random weights, built-in architecture"
        if source is None:
            source = str(builtin_size_model(Path(scratch) / "builtin-size"))
        model = load_pipeline(source, dtype="fp32")
        print(f"\n== model: {label} ({model.limits.default_width}x{model.limits.default_height}, fp32)")

        overhead = bench_engine_overhead(model, args.steps, repeats)
        print(f"raw diffusers job, {overhead['steps']} steps at {overhead['size']}: {overhead['raw_s']:.3f} s wall, "
              f"{overhead['raw_cpu_s']:.3f} s CPU")
        print("engine / raw diffusers (median of paired runs)   wall    CPU time")
        print(f"  no previews (CLIP score {overhead['clip_score_ms']:.0f} ms included)    "
              f"{overhead['engine_ratio']:.3f}   {overhead['engine_cpu_ratio']:.3f}")
        print(f"  preview every step, 256 px                     "
              f"{overhead['engine_preview_ratio']:.3f}   {overhead['engine_preview_cpu_ratio']:.3f}")
        print(f"engine's own time inside the job (setup, step hooks, metadata): {overhead['overhead_ms']:.1f} ms "
              f"= {overhead['overhead_pct']:.2f} % of the raw job's CPU time; with previews every step "
              f"{overhead['overhead_preview_ms']:.1f} ms = {overhead['overhead_preview_pct']:.2f} %")
        print(f"preview per step: {overhead['preview_ms']:.2f} ms of a {overhead['step_s'] * 1000:.1f} ms step "
              f"= {overhead['preview_pct']:.2f} %")

        if model.clip is not None:
            print(f"\n== CLIP guidance cost factor (guided / unguided, {args.steps} steps, 4 cutouts)   wall    CPU")
            for setting, wall, cpu, guided in bench_clip_guidance(model, args.steps, max(3, repeats // 2)):
                print(f"  {setting:26s} {guided:2d} guided steps:           x{wall:.2f}   x{cpu:.2f}")

        if model.guide_unet is not None:
            print(f"\n== autoguidance cost factor (/ guidance 1.5 without it, {args.steps} steps, Euler Karras)   wall    CPU")
            for setting, wall, cpu in bench_autoguidance(model, args.steps, max(3, repeats)):
                print(f"  {setting:40s}                  x{wall:.2f}   x{cpu:.2f}")


def bench_sd15(args) -> None:
    print(f"\n== SD1.5-sized UNet (random weights), 512x512, CFG batch of 2, {torch.get_num_threads()} threads")
    fp32, fp32_cpu = bench_sd15_step(torch.float32, 1 if args.quick else 2)
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"fp32: {fp32:.2f} s/step wall, {fp32_cpu:.2f} CPU-seconds/step", flush=True)
    sd_preview = bench_sd15_preview()
    print(f"preview per step: {sd_preview['latent_ms']:.2f} ms at 64x64 ({100 * sd_preview['latent_ms'] / 1000 / fp32:.3f} % "
          f"of an fp32 step), {sd_preview['256_ms']:.2f} ms scaled to 256 px "
          f"({100 * sd_preview['256_ms'] / 1000 / fp32:.3f} %)", flush=True)
    if args.quick:
        return
    if cpu_bf16_flags() or args.force_bf16_step or torch.cuda.is_available():
        bf16, bf16_cpu = bench_sd15_step(torch.bfloat16, 2)
        print(f"bf16: {bf16:.2f} s/step wall, {bf16_cpu:.2f} CPU-seconds/step "
              f"(fp32/bf16 time: {fp32 / bf16:.2f} wall, {fp32_cpu / bf16_cpu:.2f} CPU)")
    else:
        # Without hardware bf16 one SD1.5 step in bf16 ran for over 30 minutes here without finishing;
        # time the two operations a UNet step is made of instead.
        print("bf16: no hardware bf16 on this CPU; a whole step is impractical (--force-bf16-step tries).")
        for name, (wall32, wall16) in bench_bf16_ops().items():
            print(f"  {name}: fp32 {wall32 * 1000:.0f} ms, bf16 {wall16 * 1000:.0f} ms ({wall16 / wall32:.0f}x slower)")


def bench_bf16_ops() -> dict[str, tuple[float, float]]:
    """fp32 vs bf16 time of an SD1.5-sized 3x3 convolution and a 1024^3 matrix product."""
    results = {}
    for name, make in (
        ("3x3 conv, 320 channels, 64x64", lambda dt: (torch.nn.Conv2d(320, 320, 3, padding=1).to(dt),
                                                      torch.randn(1, 320, 64, 64, dtype=dt))),
        ("matmul 1024x1024x1024", lambda dt: (lambda x: x @ x, torch.randn(1024, 1024, dtype=dt))),
    ):
        times = []
        for dtype in (torch.float32, torch.bfloat16):
            op, x = make(dtype)
            with torch.no_grad():
                if dtype == torch.float32:  # the bf16 runs take a minute: no warm-up, one run
                    op(x)
                times.append(min_time(lambda: op(x), 3 if dtype == torch.float32 else 1))
        results[name] = (times[0], times[1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="diffusers directory to time (default: built-in model, else a random "
                                        "model of its architecture)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats; skip the bf16 SD1.5 step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--only", choices=["model", "sd15"], help="run only the model part or the SD1.5 part")
    parser.add_argument("--force-bf16-step", action="store_true",
                        help="time a whole SD1.5 bf16 step even without hardware bf16 (can take hours)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats

    print(f"machine: {describe_machine()}")
    print(f"automatic precision here: {choose_device_and_dtype('auto').to_dict()}")
    if args.only != "sd15":
        bench_model(args, repeats)
    if args.only != "model":
        bench_sd15(args)


if __name__ == "__main__":
    main()
