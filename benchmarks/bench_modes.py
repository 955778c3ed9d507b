"""What each mode costs against text to image at the same steps, on one model, in one run.

    .venv/bin/python benchmarks/bench_modes.py [--model generation/builtin_model] [--steps N]
        [--repeats 7] [--threads 1]

Times one engine job (``generation.diffusion.engine.generate``) of each mode with the model's
defaults for everything else (for the built-in model: 64x64, 25 steps of Euler Karras, guidance 1.5,
autoguidance 1.0):

- text to image;
- img2img at denoising strength 0.75 (diffusers runs int(steps x 0.75) of the steps);
- inpainting (a dataset image, the mask everything but its shape, strength 0.75 -- the default);
- outpainting by 16 px on each side (the canvas grows from 64x64 to 96x96; strength 0.75);
- hires fix x2 with the "Latent" upscaler (a second pass over the first one's latents, upscaled
  to 128x128, of int(steps x 0.7) steps -- hr_denoising_strength's default).

After one warm-up job of each mode (which also counts the steps it reports through
``on_progress``), the modes run ``--repeats`` rounds, interleaved; each mode's ratio is the
median over rounds of its time over that round's text-to-image time (which cancels slow drifts
of a shared machine's load), for wall and CPU time. "steps x pixels" is what the ratio would be
if a job's cost were only its UNet steps times its latent pixels (a fixed cost per job -- the
text encoder, the VAE, the CLIP score of the output -- makes small jobs cost more than that).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from generation.diffusion import dataset as shapes  # noqa: E402
from generation.diffusion.engine import generate  # noqa: E402
from generation.diffusion.loading import load_pipeline  # noqa: E402
from generation.diffusion.request import validate_request  # noqa: E402
from generation.diffusion.sources import SourceImages  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402

OUTPAINT_PX = 16


def mode_jobs(model, steps: int | None) -> list[tuple[str, object, SourceImages | None]]:
    """(label, validated request, source) of each mode, text to image first."""
    spec = shapes.sample_spec(np.random.default_rng(0))
    prompt = shapes.caption(spec.attributes())
    init = Image.fromarray(shapes.render(spec))
    mask = Image.fromarray(np.where(shapes.shape_mask(spec.shape, spec.side, spec.cx, spec.cy), 0, 255)
                           .astype(np.uint8), mode="L")
    base = {"prompt": prompt, "seed": 1}
    if steps is not None:
        base["steps"] = steps
    sides = {f"outpaint_{side}": OUTPAINT_PX for side in ("left", "right", "top", "bottom")}
    jobs = [
        ("txt2img", {}, None),
        ("img2img, strength 0.75", {"mode": "img2img", "denoising_strength": 0.75}, SourceImages(init)),
        ("inpaint, strength 0.75", {"mode": "inpaint", "denoising_strength": 0.75}, SourceImages(init, mask)),
        (f"outpaint +{OUTPAINT_PX} px each side", {"mode": "outpaint", **sides}, SourceImages(init)),
        ("hires fix x2, Latent", {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent"}, None),
    ]
    return [(label, validate_request({**base, **fields}, model.limits), source) for label, fields, source in jobs]


def steps_times_pixels(request) -> float:
    """UNet steps x latent pixels of a job (A1111's and diffusers' step counts)."""
    width, height = request.width, request.height
    if request.mode == "txt2img":
        work = request.steps * width * height
        if request.enable_hr:
            hr_width, hr_height = request.hr_size
            hr_steps = request.hr_second_pass_steps or request.steps
            work += int(hr_steps * request.hr_denoising_strength) * hr_width * hr_height
        return work
    out_width, out_height = request.output_size
    return int(request.steps * request.denoising_strength) * out_width * out_height


def run(model, request, source, on_progress=None):
    kwargs = {} if source is None else {"source": source}
    return generate(model, request, on_progress=on_progress, **kwargs)


def main(argv=None, model=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "generation" / "builtin_model"))
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if model is None:
        model = load_pipeline(args.model, dtype="fp32")
    jobs = mode_jobs(model, args.steps)
    print(f"machine: {describe_machine()}")
    base_request = jobs[0][1]
    print(f"model: {args.model}; {base_request.width}x{base_request.height}, {base_request.steps} steps of "
          f"{base_request.sampler}, guidance {base_request.guidance_scale:g}, autoguidance "
          f"{base_request.autoguidance_scale:g}; {args.repeats} interleaved rounds after a warm-up", flush=True)

    reported: dict[str, int] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for label, request, source in jobs:  # warm-up; count the steps each mode reports
        calls = []
        result = run(model, request, source, on_progress=lambda progress: calls.append(progress.step))
        reported[label] = len(calls)
        sizes[label] = result.images[0].size
    wall: dict[str, list[float]] = {label: [] for label, _, _ in jobs}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in jobs}
    for _ in range(args.repeats):
        for label, request, source in jobs:
            started, started_cpu = time.perf_counter(), time.process_time()
            run(model, request, source)
            wall[label].append(time.perf_counter() - started)
            cpu[label].append(time.process_time() - started_cpu)

    baseline = jobs[0][0]
    base_work = steps_times_pixels(base_request)
    rows = []
    for label, request, _ in jobs:
        rows.append({
            "mode": label, "size": "x".join(map(str, sizes[label])), "steps_reported": reported[label],
            "wall_s": statistics.median(wall[label]), "cpu_s": statistics.median(cpu[label]),
            "ratio_wall": statistics.median(t / b for t, b in zip(wall[label], wall[baseline])),
            "ratio_cpu": statistics.median(t / b for t, b in zip(cpu[label], cpu[baseline])),
            "steps_x_pixels": steps_times_pixels(request) / base_work,
        })
    print("| mode | output | steps reported | wall (median) | CPU (median) | / txt2img, wall | / txt2img, CPU "
          "| steps x pixels |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['mode']} | {row['size']} | {row['steps_reported']} | {row['wall_s']:.3f} s | "
              f"{row['cpu_s']:.3f} s | x{row['ratio_wall']:.2f} | x{row['ratio_cpu']:.2f} | "
              f"x{row['steps_x_pixels']:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
