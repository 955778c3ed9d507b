"""What LoRAs cost a job (issue 27): 0, 1 and 3 LoRAs, and the adapter swap, in one run.

    .venv/bin/python benchmarks/bench_lora.py [--model generation/builtin_model] [--rank 8]
        [--repeats 7] [--threads 1] [--steps N] [--device cpu]
    .venv/bin/python benchmarks/bench_lora.py --preset tiny        # seconds: what the test suite runs

The LoRAs are random-initialised rank-``--rank`` adapters on the UNet's attention projections
(``to_q``, ``to_k``, ``to_v``, ``to_out.0`` -- what ``train_lora`` trains), in diffusers/PEFT keys,
written with ``generation.diffusion.lora.save_lora``: random weights cost what trained ones cost.
Every job is an engine job (``generation.diffusion.generate`` with ``loras={name: file}``, as a
worker runs it: ``use_loras`` loads each file once per model, then ``set_adapters`` per job) at the
model's defaults (built-in model: 64x64, 25 steps of Euler Karras, guidance 1.5, autoguidance 1.0).

- first job with a set: its files read, checked against the model and loaded (``load_lora_weights``);
- per round (``--repeats``, after that warm-up), for each set in turn -- none, {A}, {A, B, C} --
  one job right after the previous set's jobs ("after another set": the adapters switched:
  ``enable_lora``/``set_adapters``/``disable_lora``) and one job with the same set again;
- cost: each set's same-set job over the no-LoRA job of the same round (median of the rounds'
  ratios: a shared machine's slow drifts cancel), wall and CPU time;
- swap: the job after another set minus the same-set job of that round (median), and the switch
  alone: entering ``use_loras`` with a set other than the model's active one, against the same set
  again (adapters already loaded; no job around it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.machine import describe_machine  # noqa: E402
from generation.diffusion.engine import generate  # noqa: E402
from generation.diffusion.loading import load_pipeline  # noqa: E402
from generation.diffusion.lora import save_lora, use_loras  # noqa: E402
from generation.diffusion.request import validate_request  # noqa: E402
from generation.diffusion.training.lora import TARGET_MODULES  # noqa: E402

BUILTIN = REPO / "generation" / "builtin_model"
SETS = {"no LoRA": (), "1 LoRA": ("a",), "3 LoRAs": ("a", "b", "c")}


def random_lora(unet, rank: int, seed: int) -> dict[str, torch.Tensor]:
    """A rank-``rank`` LoRA on the UNet's attention projections, in diffusers/PEFT keys (alpha = rank)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for path, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and any(path.endswith("." + target) for target in TARGET_MODULES):
            state[f"unet.{path}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.02
            state[f"unet.{path}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.02
    return state


def timed_job(model, fields: dict, files: dict) -> tuple[float, float]:
    request = validate_request(fields, limits=model.limits)
    wall, cpu = time.perf_counter(), time.process_time()
    generate(model, request, loras=files, on_progress=lambda progress: None, should_cancel=lambda: False)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None, model=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(BUILTIN))
    parser.add_argument("--preset", choices=("builtin", "tiny"), default="builtin",
                        help="tiny: the test suite's tiny pipeline, 2 steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, help="default: the model's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_lora-") as workdir:
            workdir = Path(workdir)
            if model is None:
                source = args.model
                if args.preset == "tiny":
                    from tests.generation.diffusion.tiny import build_tiny_pipeline

                    source = str(build_tiny_pipeline(workdir / "tiny", with_clip=False))
                model = load_pipeline(source, device=args.device, dtype=args.precision)
            return _measure(model, args, workdir)
    finally:
        torch.set_num_threads(before)


def _measure(model, args, workdir: Path) -> dict:
    files = {name: save_lora(random_lora(model.pipeline.unet, args.rank, seed), workdir / f"{name}.safetensors")
             for seed, name in enumerate(("a", "b", "c"), start=1)}
    fields = {"prompt": "a red circle on white background", "seed": 1}
    if args.steps:
        fields["steps"] = args.steps
    if args.preset == "tiny":
        fields.update(width=32, height=32, steps=args.steps or 2, guidance_scale=5.0)

    def job(set_name: str) -> tuple[float, float]:
        names = SETS[set_name]
        return timed_job(model, {**fields, "loras": [[name, 1.0] for name in names]},
                         {name: files[name] for name in names})

    first_load = {name: job(name)[0] for name in SETS}  # reads, checks and loads the files it names first
    same: dict[str, list[tuple[float, float]]] = {name: [] for name in SETS}
    switch: dict[str, list[float]] = {name: [] for name in SETS}
    for _ in range(args.repeats):
        for name in SETS:  # each set follows another: none after 3, 1 after none, 3 after 1
            switched = job(name)
            again = job(name)
            same[name].append(again)
            switch[name].append(switched[0] - again[0])
    # The switch alone, without a job around it: entering use_loras with another set than the
    # model's active one (enable/set_adapters/disable_lora on loaded adapters) vs the same set.
    switch_only: dict[str, list[float]] = {name: [] for name in SETS}
    same_only: dict[str, list[float]] = {name: [] for name in SETS}
    for _ in range(args.repeats):
        for name in SETS:
            for bucket in (switch_only, same_only):
                entered = time.perf_counter()
                with use_loras(model, [(lora, files[lora], 1.0) for lora in SETS[name]]):
                    bucket[name].append(time.perf_counter() - entered)
    base = same["no LoRA"]
    rows = []
    for name in SETS:
        rows.append({
            "set": name,
            "job_s": statistics.median(wall for wall, _ in same[name]),
            "ratio_wall": statistics.median(w / b for (w, _), (b, _) in zip(same[name], base)),
            "ratio_cpu": statistics.median(c / bc for (_, c), (_, bc) in zip(same[name], base)),
            "swap_ms": statistics.median(switch[name]) * 1000,
            "switch_ms": statistics.median(switch_only[name]) * 1000,
            "same_set_ms": statistics.median(same_only[name]) * 1000,
            "first_job_s": first_load[name],
        })
    request = validate_request(fields, limits=model.limits)
    print(f"\n## bench_lora: {model.name}, {request.width}x{request.height}, {request.steps} steps of "
          f"{request.sampler}, guidance {request.guidance_scale}, autoguidance {request.autoguidance_scale}, "
          f"{model.precision.dtype_name} on {model.device}, rank-{args.rank} LoRAs on the UNet's attention, "
          f"{args.repeats} rounds")
    print(describe_machine() + "\n")
    print("| LoRAs | job (same set again) | cost vs no LoRA, wall | CPU time | swap: job after another set, extra "
          "| the switch alone (same set) | first job with the set (files loaded) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    previous = {"no LoRA": "3 LoRAs", "1 LoRA": "no LoRA", "3 LoRAs": "1 LoRA"}
    for row in rows:
        print(f"| {row['set']} | {row['job_s'] * 1000:.0f} ms | {row['ratio_wall']:.3f} | {row['ratio_cpu']:.3f} | "
              f"{row['swap_ms']:+.1f} ms (after {previous[row['set']]}) | {row['switch_ms']:.2f} ms "
              f"({row['same_set_ms']:.2f} ms) | {row['first_job_s'] * 1000:.0f} ms |",
              flush=True)
    return {"rows": rows, "model": model.name, "steps": request.steps, "size": request.width}


if __name__ == "__main__":
    main()
