"""Measure image to image on the built-in model: does it change what the prompt changes and keep the rest?

    .venv/bin/python benchmarks/eval_image_to_image.py [--model generation/builtin_model] [--cases 100]
        [--case-seed 0] [--seed 3000] [--strengths 0.4,0.6,0.7,0.8] [--inpaint-strengths 0.75,1.0]
        [--mask-blurs 4,0] [--steps N] [--sampler NAME] [--skip img2img,inpaint,txt2img,baseline,partial] [--threads 1]
        [--out var/eval_image_to_image]

Every job goes through the engine (``generation.diffusion.engine.generate`` with ``source=``) with
the model's own defaults for every field the run does not name (for the built-in model: 64x64,
25 steps of Euler Karras, guidance 1.5, autoguidance 1.0, mask blur 4, inpainting fill
"original"), case *i* with seed ``--seed + i`` in every run, so runs are paired. Judged by
``generation.diffusion.evaluate`` (``score_edits``), which reads the five attributes back from
pixels and scores 100% on the dataset's own images.

1. img2img, object colour (``evaluate.edit_cases(N, case_seed, "color")``): a rendered dataset
   image (shape S, colour C, background B, ...) and its caption with C changed to C' (neither C
   nor B). At each ``--strengths``: the share of outputs whose object is judged C' (changed), and
   whose background, shape, size and position are still the source's (kept). Baselines: the same
   img2img with the source's own caption (how often C' appears unasked: near 0), and text to
   image with the new caption (the attributes come from the words alone, the place and side of
   the object do not: "same object in place" is its IoU with the source's shape >= 0.7).
   Since the edited caption names every attribute, text to image keeps them too; so the same runs
   again with a prompt naming only the new colour and the shape ("a purple square"), where a kept
   background, size and position can only come from the source image (text to image with that
   prompt is the baseline).
2. Inpainting, background (``edit_cases(N, case_seed + 1, "background")``): the mask is
   everything but the shape (the renderer's own ``shape_mask``; white = repaint) and the caption
   names another background B'. At each ``--inpaint-strengths`` x ``--mask-blurs``: the share
   judged on B' (changed) and keeping the shape, its colour, size and position (kept). Baselines:
   the same inpainting with the source's caption, and text to image with the new caption.

Writes ``results.json``, ``tables.md`` and grids of the first 20 cases (source, then each run)
under ``--out``; prints the tables and the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generation.diffusion import dataset as shapes  # noqa: E402
from generation.diffusion import evaluate  # noqa: E402
from generation.diffusion.engine import generate  # noqa: E402
from generation.diffusion.loading import load_pipeline  # noqa: E402
from generation.diffusion.request import validate_request  # noqa: E402
from generation.diffusion.sources import SourceImages  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402

GRID_CASES = 20


def background_mask(case: evaluate.EditCase) -> Image.Image:
    """White (repaint) everywhere but the source's shape."""
    return Image.fromarray(np.where(case.object_mask(), 0, 255).astype(np.uint8), mode="L")


def run_jobs(model, cases, seed: int, fields, source=None, steps: int | None = None,
             sampler: str | None = None) -> tuple[list[np.ndarray], float]:
    """One engine job per case: ``fields(case)`` are its request fields (the model's defaults for
    the rest), ``source(case)`` its SourceImages (None: text to image). Returns the images and the
    seconds per job."""
    images = []
    started = time.perf_counter()
    for i, case in enumerate(cases):
        raw = {**fields(case), "seed": seed + i}
        if steps is not None:
            raw["steps"] = steps
        if sampler:
            raw["sampler"] = sampler
        request = validate_request(raw, model.limits)
        kwargs = {} if source is None else {"source": source(case)}
        result = generate(model, request, **kwargs)
        images.append(np.asarray(result.images[0].convert("RGB")))
    return images, (time.perf_counter() - started) / max(1, len(cases))


def save_grid(columns: list[list[np.ndarray]], path: Path) -> None:
    """One row per case, one column per run (the first column: the source images)."""
    rows = min(len(c) for c in columns)
    h, w, _ = columns[0][0].shape
    grid = np.full((rows * h, len(columns) * (w + 2), 3), 255, np.uint8)
    for c, images in enumerate(columns):
        for r in range(rows):
            im = images[r]
            if im.shape[:2] != (h, w):
                im = np.asarray(Image.fromarray(im).resize((w, h), Image.LANCZOS))
            grid[r * h:(r + 1) * h, c * (w + 2):c * (w + 2) + w] = im
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def measure(model, label: str, cases, args, fields, source, rows: list, grid: list) -> None:
    if args.sampler:
        label += f", {args.sampler}"
    images, per_job = run_jobs(model, cases, args.seed, fields, source, args.steps, args.sampler)
    scored = evaluate.score_edits(images, cases)
    scored["seconds_per_job"] = round(per_job, 3)
    rows.append([label, scored])
    grid.append(images[:GRID_CASES])
    rates = scored["rates"]
    print(f"  {label}: changed {rates['changed'][0]:.1%}, kept all {rates['kept_all'][0]:.1%}, "
          f"edited {rates['edited'][0]:.1%}, same place {rates['same_place'][0]:.1%} "
          f"({per_job:.2f} s/job)", flush=True)


def partial_target(case: evaluate.EditCase) -> dict[str, str]:
    """The edited attribute and the shape only (``a purple square``): what is kept must then come
    from the source image, not from the words."""
    return {"shape": case.spec.shape, case.attribute: case.new_value}


def img2img_part(model, args, strengths) -> list:
    cases = evaluate.edit_cases(args.cases, args.case_seed, "color")
    rows: list = []
    grid = [[shapes.render(c.spec) for c in cases[:GRID_CASES]]]

    def source(case):
        return SourceImages(init_image=Image.fromarray(shapes.render(case.spec)))

    print(f"img2img, object colour changed by the prompt ({len(cases)} cases):", flush=True)
    for strength in strengths:
        measure(model, f"img2img, new colour, strength {strength:g}", cases, args,
                lambda c, s=strength: {"prompt": shapes.caption(c.target), "mode": "img2img", "denoising_strength": s},
                source, rows, grid)
    if "partial" not in args.skip:
        for strength in strengths:
            measure(model, f"img2img, only \"a {{new colour}} {{shape}}\", strength {strength:g}", cases, args,
                    lambda c, s=strength: {"prompt": shapes.caption(partial_target(c)), "mode": "img2img",
                                           "denoising_strength": s},
                    source, rows, grid)
    for strength in strengths if "baseline" not in args.skip else ():
        measure(model, f"baseline: img2img, the source's own caption, strength {strength:g}", cases, args,
                lambda c, s=strength: {"prompt": shapes.caption(c.source), "mode": "img2img", "denoising_strength": s},
                source, rows, grid)
    if "txt2img" not in args.skip:
        measure(model, "baseline: text to image, new colour", cases, args,
                lambda c: {"prompt": shapes.caption(c.target)}, None, rows, grid)
        if "partial" not in args.skip:
            measure(model, "baseline: text to image, only \"a {new colour} {shape}\"", cases, args,
                    lambda c: {"prompt": shapes.caption(partial_target(c))}, None, rows, grid)
    save_grid(grid, Path(args.out) / "img2img_first20.png")
    return rows


def inpaint_part(model, args, strengths, blurs) -> list:
    cases = evaluate.edit_cases(args.cases, args.case_seed + 1, "background")
    rows: list = []
    grid = [[shapes.render(c.spec) for c in cases[:GRID_CASES]]]

    def source(case):
        return SourceImages(init_image=Image.fromarray(shapes.render(case.spec)), mask=background_mask(case))

    print(f"inpainting, background changed by the prompt (mask: everything but the shape; {len(cases)} cases):",
          flush=True)
    for strength in strengths:
        for blur in blurs:
            measure(model, f"inpaint, new background, strength {strength:g}, mask blur {blur}", cases, args,
                    lambda c, s=strength, b=blur: {"prompt": shapes.caption(c.target), "mode": "inpaint",
                                                   "denoising_strength": s, "mask_blur": b},
                    source, rows, grid)
    strength, blur = strengths[0], blurs[0]
    if "baseline" not in args.skip:
        measure(model, f"baseline: inpaint, the source's own caption, strength {strength:g}, mask blur {blur}", cases,
                args, lambda c: {"prompt": shapes.caption(c.source), "mode": "inpaint", "denoising_strength": strength,
                                 "mask_blur": blur},
                source, rows, grid)
    if "txt2img" not in args.skip:
        measure(model, "baseline: text to image, new background", cases, args,
                lambda c: {"prompt": shapes.caption(c.target)}, None, rows, grid)
    save_grid(grid, Path(args.out) / "inpaint_first20.png")
    return rows


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv=None, model=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "generation" / "builtin_model"))
    p.add_argument("--cases", type=int, default=100, help="dataset images per part")
    p.add_argument("--case-seed", type=int, default=0, help="which dataset images and new values (0: the model card's)")
    p.add_argument("--seed", type=int, default=3000, help="case i uses seed + i in every run")
    p.add_argument("--strengths", default="0.4,0.6,0.7,0.8", help="img2img denoising strengths")
    p.add_argument("--inpaint-strengths", default="0.75,1.0", help="inpainting denoising strengths (0.75: the default)")
    p.add_argument("--mask-blurs", default="4,0", help="inpainting mask blurs in px (4: the default)")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--skip", default="", help="comma list: img2img,inpaint,txt2img (the text-to-image baselines),"
                   "baseline (the runs with the source's own caption),"
                   "partial (the img2img runs whose prompt names only the new colour and the shape)")
    p.add_argument("--sampler", default=None, help="an A1111 sampler name for every run (default: the model's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "var" / "eval_image_to_image"))
    args = p.parse_args(argv)
    args.skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = load_pipeline(args.model, dtype="fp32")
    limits = model.limits
    results: dict = {
        "command": "python benchmarks/eval_image_to_image.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(), "model": args.model, "cases": args.cases, "case_seed": args.case_seed, "seed": args.seed,
        "defaults": {"size": f"{limits.default_width}x{limits.default_height}",
                     "steps": args.steps or limits.default_steps, "sampler": args.sampler or limits.default_sampler,
                     "guidance_scale": limits.default_guidance_scale,
                     "autoguidance_scale": limits.default_autoguidance_scale},
    }
    print(f"machine: {results['machine']}\nrequests: the model's defaults ({results['defaults']})", flush=True)
    started = time.perf_counter()
    tables = []
    if "img2img" not in args.skip:
        results["img2img"] = img2img_part(model, args, numbers(args.strengths))
        tables.append("img2img, object colour changed by the prompt:\n\n"
                      + evaluate.format_edit_table(results["img2img"], "color"))
    if "inpaint" not in args.skip:
        results["inpaint"] = inpaint_part(model, args, numbers(args.inpaint_strengths),
                                          [int(b) for b in numbers(args.mask_blurs)])
        tables.append("Inpainting (mask: everything but the shape), background changed by the prompt:\n\n"
                      + evaluate.format_edit_table(results["inpaint"], "background"))
    results["seconds"] = round(time.perf_counter() - started, 1)
    text = "\n\n".join(tables) + "\n"
    print("\n" + text + f"\n{results['seconds']:.0f} s; machine: {results['machine']}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "tables.md").write_text(text)
    return results


if __name__ == "__main__":
    main()
