"""Throughput on a GPU (issue 28, item 4): plain diffusers, ldmsite's engine, the fast path, and
concurrent jobs batched vs one at a time -- all in one run, nothing downloaded.

    .venv/bin/python benchmarks/bench_gpu.py                                  # CUDA, SD1.5 architecture, 512x512, 25 steps
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --preset builtin    # here: the built-in model at its defaults
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --preset tiny       # seconds: what the test suite runs

Presets (``--preset``):

- ``sd15`` (default): a Stable Diffusion 1.5-architecture pipeline with random weights, built from
  diffusers' and transformers' configs (``UNet2DConditionModel`` defaults with SD1.5's 768-wide
  cross-attention and 64-latent size, SD's ``AutoencoderKL``, a 12-layer 768-wide ``CLIPTextModel``,
  a byte-level CLIP tokenizer built locally), saved to a temporary directory and loaded the way a
  worker loads a model (``load_pipeline``); fp16 on CUDA. 512x512, 25 steps of Euler, CFG 7.5 (a
  UNet batch of 2 per image). Random weights cost what trained ones cost: the same shapes, the
  same kernels.
- ``builtin``: ``generation/builtin_model`` at its own defaults (64x64, 25 steps, Euler Karras,
  guidance 1.5), autoguidance off so that plain diffusers runs the same job.
- ``tiny``: the test suite's tiny pipeline (32x32, 2 steps): keeps this script running.

Rows, in this order (the fast path changes the model in place, so it comes last):

1. plain diffusers: ``StableDiffusionPipeline.__call__`` over the loaded model's modules, same
   sampler, seed and size;
2. ldmsite's engine: ``generation.diffusion.generate`` with a progress callback and a cancel check,
   as a worker calls it;
3. concurrent jobs (``--concurrency``, default 1, 4, 8, 16): N jobs (different prompts and seeds)
   one at a time vs as one batch through the engine's batch API (``generate_batch``), images/s, on
   the engine as loaded (not compiled);
4. the fast path (:mod:`generation.diffusion.fastpath`: channels_last, SDPA, cuDNN autotuning,
   ``torch.compile`` of the UNet warmed at load) through the engine; with ``--fast-batched`` the
   concurrent rows again on it (every batch shape compiled first: slow).

it/s is denoising steps per second of one job, measured from step-end to step-end inside the run
(as diffusers' progress bar counts it); "job" is the whole job's wall time (text encoder, steps,
VAE decode, PIL). Each row is the median of ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.machine import describe_machine  # noqa: E402
from generation.diffusion import engine  # noqa: E402
from generation.diffusion.fastpath import DEFAULT_COMPILE_MODE, apply_fast_path, warm_up  # noqa: E402
from generation.diffusion.loading import load_pipeline  # noqa: E402
from generation.diffusion.precision import quiet_dtype_casts  # noqa: E402
from generation.diffusion.request import validate_request  # noqa: E402
from generation.diffusion.samplers import build_scheduler  # noqa: E402

BUILTIN = REPO / "generation" / "builtin_model"
PROMPTS = ("a red circle on white background", "a blue square on black background",
           "a green triangle on white background", "a small red square in the top left")
OVERRIDES: dict = {"size": None, "steps": None}  # --size, --steps
PRESETS = {  # size, steps, sampler, guidance (None: the model's own defaults)
    "sd15": dict(size=512, steps=25, sampler="Euler", guidance=7.5),
    "builtin": dict(size=None, steps=None, sampler=None, guidance=None),
    "tiny": dict(size=32, steps=2, sampler="Euler", guidance=5.0),
}


# ------------------------------------------------------------------------------------- models

def sd15_pipeline(device: torch.device):
    """An SD1.5-architecture StableDiffusionPipeline with random weights (built on ``device``)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.generation.diffusion.tiny import build_tiny_tokenizer

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: seconds on a GPU instead of a minute on the host
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # otherwise diffusers' defaults: SD1.x
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
            bos_token_id=0, eos_token_id=1, pad_token_id=1))  # the local tokenizer's special tokens
    # SD1.5's own scheduler config (the engine builds each job's sampler from it).
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)
    pipeline = StableDiffusionPipeline(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(),
                                       tokenizer=build_tiny_tokenizer(), scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    return pipeline


def load_model(preset: str, device: torch.device, precision: str | None, workdir: Path):
    """The preset's model, loaded by ``load_pipeline`` as a worker loads one (fast path off)."""
    if preset == "builtin":
        return load_pipeline(str(BUILTIN), device=device, dtype=precision or "fp32")
    if preset == "tiny":
        from tests.generation.diffusion.tiny import build_tiny_pipeline

        return load_pipeline(str(build_tiny_pipeline(workdir / "tiny", with_clip=False)), device=device,
                             dtype=precision or "fp32")
    dtype = precision or ("fp16" if device.type == "cuda" else "fp32")
    pipeline = sd15_pipeline(device)
    with quiet_dtype_casts():
        pipeline.to(dtype={"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    pipeline.save_pretrained(workdir / "sd15", safe_serialization=True)
    del pipeline
    return load_pipeline(str(workdir / "sd15"), device=device, dtype=dtype)


# ----------------------------------------------------------------------------------- measuring

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Step-end timestamps of one job: it/s as diffusers' progress bar counts it."""

    def __init__(self, device):
        self.device = device
        self.ends: list[float] = []

    def mark(self, *_):
        self.ends.append(time.perf_counter())

    def its(self) -> float:
        if len(self.ends) < 2:
            return float("nan")
        return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])


def job_fields(model, preset: str, index: int = 0) -> dict:
    settings = {**PRESETS[preset], **{key: value for key, value in OVERRIDES.items() if value}}
    limits = model.limits
    size = settings["size"] or limits.default_width
    return {"prompt": PROMPTS[index % len(PROMPTS)], "seed": 1000 + index, "width": size, "height": size,
            "steps": settings["steps"] or limits.default_steps, "sampler": settings["sampler"] or limits.default_sampler,
            "guidance_scale": settings["guidance"] if settings["guidance"] is not None else limits.default_guidance_scale,
            "autoguidance_scale": 0}


def requests_for(model, preset: str, count: int) -> list:
    return [validate_request(job_fields(model, preset, i), limits=model.limits) for i in range(count)]


def timed_runs(run, repeats: int, device) -> dict:
    """One warm-up run, then ``repeats``: median it/s and job seconds."""
    run(StepClock(device))
    its, walls, cpu = [], [], []
    for _ in range(repeats):
        clock = StepClock(device)
        synchronize(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        run(clock)
        synchronize(device)
        walls.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        its.append(clock.its())
    # CPU time: on a shared CPU machine it moves less with other processes' load than wall time does
    return {"its": statistics.median(its), "job_s": statistics.median(walls), "cpu_s": statistics.median(cpu)}


def plain_diffusers(model, preset: str, repeats: int) -> dict:
    from diffusers import StableDiffusionPipeline

    fields = job_fields(model, preset)
    base = model.pipeline
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=base.unet, scheduler=build_scheduler(fields["sampler"], model.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def run(clock):
        def on_step_end(pipeline, step, timestep, tensors):
            clock.mark()
            return {}

        pipe(fields["prompt"], height=fields["height"], width=fields["width"], num_inference_steps=fields["steps"],
             guidance_scale=fields["guidance_scale"], generator=torch.Generator("cpu").manual_seed(fields["seed"]),
             callback_on_step_end=on_step_end)

    return timed_runs(run, repeats, model.device)


def engine_job(model, preset: str, repeats: int) -> dict:
    request = requests_for(model, preset, 1)[0]

    def run(clock):
        engine.generate(model, request, on_progress=clock.mark, should_cancel=lambda: False)

    return timed_runs(run, repeats, model.device)


def concurrent(model, preset: str, counts: list[int], repeats: int) -> list[dict]:
    """images/s of N jobs one at a time vs as one batch (median of ``repeats`` after a warm-up each)."""
    batch = batch_api()
    rows = []
    for count in counts:
        requests = requests_for(model, preset, count)

        def one_at_a_time():
            for request in requests:
                engine.generate(model, request, on_progress=lambda progress: None, should_cancel=lambda: False)

        def batched():  # with the same per-job callbacks as the jobs one at a time
            results = batch(model, requests, on_progress=[lambda progress: None] * count,
                            should_cancel=[lambda: False] * count)
            failed = [result for result in results if isinstance(result, BaseException)]
            if failed:
                raise failed[0]

        row = {"jobs": count, "one_at_a_time": _images_per_second(one_at_a_time, count, repeats, model.device)}
        row["batched"] = _images_per_second(batched, count, repeats, model.device) if batch else None
        row["ratio"] = row["batched"] / row["one_at_a_time"] if batch else None
        rows.append(row)
    return rows


def batch_api():
    """The engine's batch API (``generation.diffusion.batch.generate_batch``), or None before it exists."""
    try:
        from generation.diffusion.batch import generate_batch
    except ImportError:
        return None
    return generate_batch


def _images_per_second(run, images: int, repeats: int, device) -> float:
    run()  # warm-up: this batch shape's kernels (cuDNN autotuning, allocator)
    walls = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        walls.append(time.perf_counter() - started)
    return images / statistics.median(walls)


# ------------------------------------------------------------------------------------ reporting

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
                f"torch {torch.__version__}; host: {describe_machine()}")
    return describe_machine()


def print_report(result: dict) -> None:
    print(f"\n## bench_gpu: preset {result['preset']} on {result['device']}")
    print(f"{result['machine']}")
    job = result["job"]
    print(f"job: {job['width']}x{job['height']}, {job['steps']} steps of {job['sampler']}, guidance "
          f"{job['guidance_scale']}, {result['precision']}; medians of {result['repeats']} runs after a warm-up\n")
    print("| what | it/s | job wall | job CPU time | it/s vs plain diffusers |")
    print("| --- | --- | --- | --- | --- |")
    plain = result["plain_diffusers"]["its"]
    for label, key in (("plain diffusers (`StableDiffusionPipeline.__call__`)", "plain_diffusers"),
                       ("ldmsite engine (`generate()`)", "engine"), ("engine + fast path", "fast_path")):
        row = result.get(key)
        if row is None:
            continue
        print(f"| {label} | {row['its']:.2f} | {row['job_s'] * 1000:.0f} ms | {row['cpu_s'] * 1000:.0f} ms "
              f"| {row['its'] / plain:.2f}x |")
    fast = result.get("fast_path_report")
    if fast:
        print(f"\nfast path: {'; '.join(fast['applied'])}; compiled at load in {fast['warmup_seconds']:.1f} s "
              f"(shapes {', '.join(fast['compiled_shapes']) or 'none'})")
    for title, key in (("engine as loaded (not compiled)", "concurrent"), ("engine + fast path", "fast_concurrent")):
        rows = result.get(key)
        if not rows:
            continue
        print(f"\nconcurrent jobs, {title}: images/s\n")
        print("| jobs | one at a time | batched | batched / one at a time |")
        print("| --- | --- | --- | --- |")
        for row in rows:
            batched = f"{row['batched']:.2f}" if row["batched"] is not None else "n/a (no batch API)"
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "n/a"
            print(f"| {row['jobs']} | {row['one_at_a_time']:.2f} | {batched} | {ratio} |")
    print(f"\ntotal run: {result['seconds']:.0f} s", flush=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sd15")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16", "auto"),
                        help="default: fp16 for sd15 on CUDA, else fp32")
    parser.add_argument("--size", type=int, help="image width and height instead of the preset's")
    parser.add_argument("--steps", type=int, help="steps instead of the preset's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,4,8,16", help="numbers of concurrent jobs (comma-separated)")
    parser.add_argument("--compile-mode", default=DEFAULT_COMPILE_MODE,
                        help="torch.compile mode of the fast path (e.g. default, reduce-overhead)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (eager: dynamo's graph capture only, for quick checks)")
    parser.add_argument("--no-compile", action="store_true", help="the fast path without torch.compile")
    parser.add_argument("--fast-batched", action="store_true",
                        help="also time the concurrent jobs on the fast path (compiles every batch shape first)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    OVERRIDES.update(size=args.size, steps=args.steps)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run(args)
    finally:
        torch.set_num_threads(threads)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def run(args) -> dict:
    import diffusers

    started = time.perf_counter()
    diffusers.utils.logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar
    device = torch.device(args.device)
    counts = [int(n) for n in args.concurrency.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as workdir, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*invalid value encountered in cast.*")  # random weights in fp16
        model = load_model(args.preset, device, args.precision, Path(workdir))
        request = requests_for(model, args.preset, 1)[0]
        result = {"preset": args.preset, "device": str(device), "machine": device_name(device),
                  "precision": f"{model.precision.dtype_name} ({model.precision.reason})", "repeats": args.repeats,
                  "job": {key: getattr(request, key) for key in ("width", "height", "steps", "sampler", "guidance_scale")}}
        result["plain_diffusers"] = plain_diffusers(model, args.preset, args.repeats)
        result["engine"] = engine_job(model, args.preset, args.repeats)
        result["concurrent"] = concurrent(model, args.preset, counts, args.repeats)
        report = apply_fast_path(model, "on", compile=not args.no_compile, compile_mode=args.compile_mode,
                                 compile_backend=args.compile_backend)
        result["fast_path"] = engine_job(model, args.preset, args.repeats)
        result["fast_path_report"] = report.to_dict()
        if args.fast_batched:
            warm_up(model, images=counts, height=request.height, width=request.width,
                    guidance=request.guidance_scale > 1)
            result["fast_concurrent"] = concurrent(model, args.preset, counts, args.repeats)
            result["fast_path_report"] = report.to_dict()
    result["seconds"] = time.perf_counter() - started
    return result


if __name__ == "__main__":
    main()
