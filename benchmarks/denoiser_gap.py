"""How far a shapes UNet's denoising is from the best possible, noise level by noise level.

    python benchmarks/denoiser_gap.py [--model generation/builtin_model] [--images 48] [--t 50,120,200,400,600]

For a fully specified caption the dataset allows only a few hundred images (every bounding-box
side of the caption's size times the 7 x 7 position jitters), so the Bayes-optimal x0
prediction from x_t = sqrt(abar) z0 + sqrt(1 - abar) eps is exact and cheap: encode every
allowed image, weight each by its likelihood N(x_t; sqrt(abar) z_i, (1 - abar) I) and average.
The script prints the mean squared error (scaled latents) of that optimum and of the model's
conditional x0 prediction (no guidance) at each t, on fresh dataset images, same noise for both.
A model near the optimum cannot be improved by more training at that t; a large gap says
where the UNet loses precision (docs/MODEL.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generation.diffusion import dataset as shapes  # noqa: E402


def allowed_specs(spec: shapes.ShapeSpec) -> list[shapes.ShapeSpec]:
    """Every image the dataset can draw for ``spec``'s full caption."""
    lo, hi = shapes.SIZES[spec.size]
    jitter = range(-shapes.POSITION_JITTER, shapes.POSITION_JITTER + 1)
    return [shapes.placed_spec(spec.color, spec.background, spec.shape, spec.size, spec.position, side, jx, jy)
            for side in range(lo, hi + 1) for jx in jitter for jy in jitter]


@torch.no_grad()
def encode(vae, specs: list[shapes.ShapeSpec]) -> torch.Tensor:
    x = torch.from_numpy(shapes.to_unit_range(np.stack([shapes.render(s) for s in specs])))
    z = torch.cat([vae.encode(x[i : i + 128]).latent_dist.mean for i in range(0, len(x), 128)])
    return z * vae.config.scaling_factor


@torch.no_grad()
def gap(pipe, count: int, timesteps: list[int], seed: int = 0) -> dict[int, dict[str, float]]:
    vae, unet = pipe.vae, pipe.unet
    alphas = pipe.scheduler.alphas_cumprod
    if pipe.scheduler.config.prediction_type != "v_prediction":
        raise SystemExit("this script reads the UNet's output as v; the model predicts " + pipe.scheduler.config.prediction_type)
    rng, noise_gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    errors = {t: {"optimal": [], "model": []} for t in timesteps}
    for n in range(count):
        spec = shapes.sample_spec(rng, {"shape": shapes.SHAPES[n % len(shapes.SHAPES)]})
        candidates, z0 = encode(vae, allowed_specs(spec)), encode(vae, [spec])
        text = pipe.encode_prompt([shapes.caption(spec.attributes())], "cpu", 1, False)[0]
        for t in timesteps:
            a, s = alphas[t].sqrt(), (1 - alphas[t]).sqrt()
            xt = a * z0 + s * torch.randn(z0.shape, generator=noise_gen)
            weights = torch.softmax(-((xt - a * candidates) ** 2).sum((1, 2, 3)) / (2 * s**2), 0)
            optimal = (weights[:, None, None, None] * candidates).sum(0, keepdim=True)
            model = a * xt - s * unet(xt, torch.tensor([t]), encoder_hidden_states=text).sample
            errors[t]["optimal"].append((optimal - z0).pow(2).mean().item())
            errors[t]["model"].append((model - z0).pow(2).mean().item())
    return {t: {k: float(np.mean(v)) for k, v in e.items()} for t, e in errors.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "generation" / "builtin_model"))
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--t", default="50,120,200,400,600")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, requires_safety_checker=False)
    result = gap(pipe, args.images, [int(t) for t in args.t.split(",")])
    print("| t | Bayes-optimal x0 error | model x0 error | ratio |\n| --- | --- | --- | --- |")
    for t, e in result.items():
        print(f"| {t} | {e['optimal']:.4f} | {e['model']:.4f} | {e['model'] / max(e['optimal'], 1e-12):.1f}x |")
    return result


if __name__ == "__main__":
    main()
