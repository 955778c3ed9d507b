"""``manage.py generate``: text-to-image from the command line, no web server or worker needed.

    python manage.py generate "a red circle on a blue background" --steps 20 --seed 42 -n 4 --out out/
    python manage.py generate --model stable-diffusion-v1-5/stable-diffusion-v1-5 "a castle" --width 512
    python manage.py generate --from-png out/00003-42.png --steps 40     # redo an image, changing one thing

Writes one PNG per image, named like AUTOMATIC1111's (``00003-42.png``: running number, seed), with
the A1111 ``parameters`` text and our full JSON metadata embedded. Input is checked by the same
``validate_request`` as the web form and the APIs.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from generation import diffusion  # torch loads when the model does (PEP 562), after input is checked
from generation.admission import Refusal, check_prompt, resolve_model
from generation.sources import as_init_image, as_mask, read_picture
from generation.workers import precision_cache_file, resolve_source

FIELD_OPTIONS = {
    # request field: (flags, type, help)
    "negative_prompt": (("--negative-prompt",), str, "what the image should not show"),
    "width": (("--width", "-W"), int, "image width in pixels (multiple of 8)"),
    "height": (("--height", "-H"), int, "image height in pixels (multiple of 8)"),
    "steps": (("--steps",), int, "denoising steps (1-150)"),
    "guidance_scale": (("--guidance-scale", "--cfg-scale"), float, "classifier-free guidance scale"),
    "autoguidance_scale": (("--autoguidance-scale",), float,
                           "autoguidance strength, for models with a guide UNet (0 = off)"),
    "sampler": (("--sampler",), str, "sampler name, e.g. 'Euler a', 'DPM++ 2M Karras', 'DDIM'"),
    "seed": (("--seed",), int, "seed of the first image; image k uses seed + k (default: random)"),
    "num_images": (("--num-images", "-n"), int, "images to make (1-8)"),
    "eta": (("--eta",), float, "DDIM eta (0-1)"),
    "clip_guidance_scale": (("--clip-guidance-scale",), float, "CLIP guidance strength (0 = off)"),
    "clip_cutouts": (("--clip-cutouts",), int, "random cutouts per CLIP-guided step"),
    "clip_guidance_every": (("--clip-guidance-every",), int, "guide every N-th step"),
    "clip_guidance_start": (("--clip-guidance-start",), float, "guidance window start (fraction of steps)"),
    "clip_guidance_end": (("--clip-guidance-end",), float, "guidance window end (fraction of steps)"),
    # image to image (with --init-image, and --mask to inpaint)
    "mode": (("--mode",), str, "txt2img, img2img, inpaint or outpaint (default: from --init-image/--mask)"),
    "denoising_strength": (("--denoising-strength", "--strength"), float,
                           "how much of the source is repainted (0-1, default 0.75)"),
    "resize_mode": (("--resize-mode",), int, "a source of another size: 0 just resize, 1 crop and resize, "
                                             "2 resize and fill"),
    "mask_blur": (("--mask-blur",), int, "pixels of blur on the mask's edge (default 4)"),
    "inpainting_fill": (("--inpainting-fill",), int, "masked content: 0 fill, 1 original, 2 latent noise, "
                                                     "3 latent nothing"),
    "inpaint_full_res": (("--inpaint-full-res",), str, "true: repaint only the masked area at full resolution"),
    "inpaint_full_res_padding": (("--inpaint-full-res-padding",), int, "pixels of context around that area"),
    "inpainting_mask_invert": (("--mask-invert",), str, "true: repaint the black of the mask"),
    "outpaint_left": (("--outpaint-left",), int, "outpaint: pixels added on the left (multiple of 8)"),
    "outpaint_right": (("--outpaint-right",), int, "outpaint: pixels added on the right"),
    "outpaint_top": (("--outpaint-top",), int, "outpaint: pixels added at the top"),
    "outpaint_bottom": (("--outpaint-bottom",), int, "outpaint: pixels added at the bottom"),
    # hires fix
    "enable_hr": (("--hires",), str, "true: hires fix, a second pass at a larger size"),
    "hr_scale": (("--hr-scale",), float, "hires fix: upscale factor (1-4, default 2)"),
    "hr_resize_x": (("--hr-resize-x",), int, "hires fix: target width instead of --hr-scale"),
    "hr_resize_y": (("--hr-resize-y",), int, "hires fix: target height instead of --hr-scale"),
    "hr_upscaler": (("--hr-upscaler",), str, "hires fix: Latent, Latent (bicubic), Lanczos, ... (default Latent)"),
    "hr_second_pass_steps": (("--hr-steps",), int, "hires fix: steps of the second pass (default: --steps)"),
    "hr_denoising_strength": (("--hr-denoising-strength",), float, "hires fix: strength of the second pass"),
    "hr_prompt": (("--hr-prompt",), str, "hires fix: prompt of the second pass (default: the prompt)"),
    "hr_negative_prompt": (("--hr-negative-prompt",), str, "hires fix: its negative prompt"),
    "hr_sampler_name": (("--hr-sampler",), str, "hires fix: its sampler (default: --sampler)"),
}


def next_png_path(directory: Path, seed: int) -> Path:
    """``directory/NNNNN-seed.png`` with the next free running number."""
    numbers = [int(m.group(1)) for p in directory.glob("*.png") if (m := re.match(r"(\d{5})-", p.name))]
    return directory / f"{max(numbers, default=-1) + 1:05d}-{seed}.png"


class Command(BaseCommand):
    help = ("Generate images from a text prompt -- or from a picture with --init-image (and --mask to "
            "inpaint) -- and write PNGs with embedded parameters.")

    def add_arguments(self, parser):
        parser.add_argument("prompt", nargs="?", help="the text prompt (optional with --from-png)")
        parser.add_argument("--model", help="a registered model's slug, a diffusers directory or a hub id "
                                            "(default: the default registered model, else the built-in model)")
        parser.add_argument("--clip-source", help="CLIP model for guidance and scores (default: the model's)")
        parser.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                            help="weights precision (default: the LDM_PRECISION setting)")
        parser.add_argument("--device", help="torch device, e.g. cpu or cuda:1 (default: best available)")
        parser.add_argument("--out", default=".", help="output directory (default: the current one)")
        parser.add_argument("--from-png", help="start from the parameters embedded in this PNG")
        parser.add_argument("--init-image", help="image to image: the picture to start from")
        parser.add_argument("--mask", help="inpainting: the mask (white = repaint), the init image's size")
        parser.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                            help="apply a LoRA file (.safetensors, kohya or diffusers keys) at WEIGHT (default 1); "
                                 "its name is the file's stem, as in <lora:stem:weight>; repeat for several")
        for field, (flags, kind, text) in FIELD_OPTIONS.items():
            parser.add_argument(*flags, dest=field, type=kind, default=None, help=text)

    # --------------------------------------------------------------------------------- model

    def resolve_model(self, name: str | None):
        """(source, clip_source, limits or None) for --model: a directory, a registered model's slug
        (the site's own lookup), else a hub id; without --model the default registered model."""
        if name and (Path(name).expanduser().is_dir() or (settings.BASE_DIR / name).is_dir()):
            return resolve_source(name), None, None
        try:
            registered = resolve_model(name)
        except (Refusal, DatabaseError):  # not registered, or no database yet (fresh checkout)
            registered = None
        if registered is not None:
            return resolve_source(registered.source), registered.clip_source or None, registered.limits()
        if name:
            return name, None, None  # a hub id
        return str(settings.LDM_BUILTIN_MODEL_DIR), None, None

    def check_prompt(self, prompt: str, negative_prompt: str) -> None:
        """The site's prompt gate (the blocklist); without a database there is no blocklist to apply."""
        try:
            check_prompt(None, prompt, negative_prompt)
        except Refusal as error:
            raise CommandError("Refused: " + "; ".join(error.errors.values())) from None
        except DatabaseError:
            self.stderr.write("No database: the prompt blocklist was not checked")

    def read_loras(self, options, raw: dict) -> dict[str, Path]:
        """--lora FILE[:WEIGHT]: the files by name (the stem), added to the request's `loras`."""
        files, chosen = {}, []
        for given in options["lora"]:
            path, weight = Path(given), "1"
            if not path.is_file() and ":" in given:
                head, _, tail = given.rpartition(":")
                path, weight = Path(head), tail
            if not path.is_file():
                raise CommandError(f"--lora: {given} is not a file (FILE or FILE:WEIGHT)")
            files[path.stem] = path
            chosen.append(f"{path.stem}:{weight}")
        if chosen:
            earlier = raw.get("loras") or []  # from --from-png: [name, weight] pairs
            raw["loras"] = [*(earlier if isinstance(earlier, list) else [earlier]), *chosen]
        return files

    def read_source(self, options, raw: dict):
        """--init-image and --mask, checked as the site checks uploads (`generation.sources`); the
        mode follows from them unless --mode says otherwise."""
        if options["mask"] and not options["init_image"]:
            raise CommandError("--mask needs --init-image (the picture the mask is painted over)")
        pictures = {}
        for field in ("init_image", "mask"):
            if options[field]:
                path = Path(options[field])
                try:
                    with path.open("rb") as handle:
                        pictures[field] = read_picture(handle, field)
                except OSError as error:
                    raise CommandError(f"--{field.replace('_', '-')}: cannot read {path}: {error.strerror}") from None
                except Refusal as refusal:
                    raise CommandError(f"--{field.replace('_', '-')}: {path} {refusal.errors[field]}") from None
        if not raw.get("mode"):
            raw["mode"] = "inpaint" if "mask" in pictures else "img2img" if pictures else "txt2img"
        if not pictures:
            return None
        return diffusion.SourceImages(as_init_image(pictures["init_image"]),
                                      as_mask(pictures["mask"]) if "mask" in pictures else None)

    # --------------------------------------------------------------------------------- run

    def handle(self, *args, **options):
        raw: dict = {}
        if options["from_png"]:
            try:
                raw.update(diffusion.read_png_parameters(options["from_png"]))
            except OSError as error:
                raise CommandError(f"--from-png: cannot read {options['from_png']}: {error}") from None
            if not raw:
                raise CommandError(f"--from-png: {options['from_png']} holds no generation parameters")
        if options["prompt"]:
            raw["prompt"] = options["prompt"]
        raw.update({field: options[field] for field in FIELD_OPTIONS if options[field] is not None})
        pictures = self.read_source(options, raw)
        lora_files = self.read_loras(options, raw)
        if not raw.get("prompt"):
            raise CommandError("Give a prompt (or --from-png with a PNG that has one).")
        self.check_prompt(str(raw["prompt"]), str(raw.get("negative_prompt") or ""))

        source, clip_source, limits = self.resolve_model(options["model"])
        if options["clip_source"]:
            clip_source = options["clip_source"]
        precision = options["precision"] or getattr(settings, "LDM_PRECISION", "auto")
        self.stderr.write(f"Loading {source} ...")
        try:
            model = diffusion.load_pipeline(source, device=options["device"], dtype=precision,
                                            clip_source=clip_source, precision_cache=precision_cache_file())
        except diffusion.ModelLoadError as error:
            raise CommandError(str(error)) from None
        try:
            request = diffusion.validate_request(raw, limits or model.limits)
            diffusion.check_source(request.mode, pictures)
        except diffusion.RequestValidationError as error:
            lines = "\n".join(f"  {field}: {message}" for field, message in error.errors.items())
            raise CommandError(f"Invalid request:\n{lines}") from None
        except diffusion.UnsupportedRequest as error:
            raise CommandError(f"Invalid request:\n  {error}") from None

        out = Path(options["out"])
        out.mkdir(parents=True, exist_ok=True)
        interactive = self.stderr.isatty() if hasattr(self.stderr, "isatty") else False

        def on_progress(progress):
            line = f"step {progress.step}/{progress.total}, {progress.elapsed:.1f}s, eta {progress.eta_seconds:.1f}s"
            if interactive:
                self.stderr.write(f"\r{line}", ending="")
            elif progress.step == progress.total or progress.step % 10 == 0:
                self.stderr.write(line)

        self.stderr.write(f"Generating {request.num_images} image(s), seed {request.seed}, {request.steps} steps "
                          f"of {request.sampler} at {request.width}x{request.height} on "
                          f"{model.device} ({model.precision.dtype_name}) ...")
        started = time.perf_counter()
        try:
            result = diffusion.generate(model, request, source=pictures, on_progress=on_progress, loras=lora_files)
        except KeyboardInterrupt:
            raise CommandError("Interrupted.") from None
        if interactive:
            self.stderr.write("")
        for index, image in enumerate(result.images):
            path = next_png_path(out, result.seeds[index])
            diffusion.write_png(image, result.metadata[index], result.parameters[index], path)
            score = result.clip_scores[index] if result.clip_scores else None
            self.stdout.write(f"{path}" + (f"  CLIP score {score:.1f}" if score is not None else ""))
        self.stderr.write(f"Done in {time.perf_counter() - started:.1f}s.")
        sys.stdout.flush()
