"""Smoke test of the shipped model: plain diffusers loads it and a few prompts come out right."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.diffusion import evaluate as e
from generation.diffusion import read_model_defaults

from .tiny import with_engine_kernels

MODEL = Path(__file__).resolve().parents[3] / "generation" / "builtin_model"

# What ldmsite samples the shipped model with: its own ldmsite_defaults.json (a missing model or
# file fails here, at collection).
DEFAULTS = read_model_defaults(MODEL)
SAMPLER = DEFAULTS["default_sampler"]
GUIDANCE = DEFAULTS["default_guidance_scale"]
AUTOGUIDANCE = DEFAULTS["default_autoguidance_scale"]


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_directory_is_a_plain_small_pipeline_with_clip_and_preview_factors():
    from transformers import CLIPModel, CLIPTokenizer

    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size < 30e6
    index = json.loads((MODEL / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] or index.get("safety_checker") in (None, [None, None])
    clip = CLIPModel.from_pretrained(MODEL / "clip")
    assert clip.config.vision_config.image_size == 64
    assert CLIPTokenizer.from_pretrained(MODEL / "tokenizer").model_max_length == 16
    preview = json.loads((MODEL / "latent_preview.json").read_text())
    assert np.array(preview["matrix"]).shape == (4, 3) and len(preview["bias"]) == 3


def test_plain_diffusers_samples_with_the_default_sampler_the_export_stage_writes(pipe):
    """The shipped scheduler is what ``schedule.sampling_scheduler`` exports (ldmsite's default sampler
    for the model on its training schedule); only the pipeline's own ``steps_offset`` fix differs."""
    from generation.diffusion import SAMPLERS
    from generation.diffusion.training.schedule import sampling_scheduler

    assert type(pipe.scheduler).__name__ == SAMPLERS[SAMPLER].scheduler_class
    exported_scheduler = sampling_scheduler()
    ignored = {"steps_offset", "_class_name", "_diffusers_version", "_use_default_values", "trained_betas"}
    shipped = {k: v for k, v in pipe.scheduler.config.items() if k not in ignored}
    exported = {k: v for k, v in exported_scheduler.config.items() if k not in ignored}
    assert shipped == exported and shipped["use_karras_sigmas"]
    # The betas are computed in float64 whose last digit follows the CPU's vector math (Intel AMX
    # machines differ in the 16th); the samplers use them in float32, whose resolution is 1e-7.
    np.testing.assert_allclose(pipe.scheduler.config.trained_betas, exported_scheduler.config.trained_betas,
                               rtol=1e-9, atol=0)


def test_the_shipped_defaults_are_the_ones_the_presets_measured_best():
    """The export stage writes the scheduler of ``BUILTIN_SAMPLER``; the evaluator measures at the
    presets' scales. The model directory's defaults file must say the same."""
    from generation.diffusion.training.presets import (BUILTIN_AUTOGUIDANCE_SCALE, BUILTIN_GUIDANCE_SCALE,
                                                       BUILTIN_SAMPLER)

    assert (SAMPLER, GUIDANCE, AUTOGUIDANCE) == (BUILTIN_SAMPLER, BUILTIN_GUIDANCE_SCALE, BUILTIN_AUTOGUIDANCE_SCALE)


def test_shipped_model_paints_the_asked_colours(pipe):
    wanted = [
        {"size": "large", "color": "red", "shape": "square", "position": "in the center", "background": "white"},
        {"size": "large", "color": "blue", "shape": "circle", "position": "in the center", "background": "yellow"},
        {"size": "large", "color": "yellow", "shape": "square", "position": "in the center", "background": "black"},
        {"size": "large", "color": "green", "shape": "circle", "position": "in the center", "background": "purple"},
    ]
    images = e.pipeline_images(pipe, wanted, seed=0, steps=15, guidance_scale=GUIDANCE, batch_size=4)
    judged = [e.judge(im) for im in images]
    assert sum(j["background"] == w["background"] for j, w in zip(judged, wanted)) >= 3, judged
    assert sum(j["color"] == w["color"] for j, w in zip(judged, wanted)) >= 3, judged


def test_changing_one_word_changes_the_image(pipe):
    prompts = ["a large red circle in the center on a white background", "a large blue circle in the center on a white background"]
    out = pipe(prompts, num_inference_steps=10, guidance_scale=GUIDANCE, generator=[torch.Generator().manual_seed(3)] * 2, output_type="np").images
    assert np.abs(out[0] - out[1]).mean() > 0.02


@pytest.fixture(scope="module")
def engine_builtin():
    from generation.diffusion import load_pipeline

    return load_pipeline(str(MODEL), device="cpu", dtype="fp32")


def test_karras_sigmas_repeat_timesteps_on_the_built_in_schedule():
    """The premise of the next test: on this zero-terminal-SNR schedule the top Karras sigmas round
    to the same integer timestep, which made DPM++ 2M Karras run past its sigmas (diffusers #12771)."""
    from generation.diffusion import build_scheduler

    config = json.loads((MODEL / "scheduler" / "scheduler_config.json").read_text())
    scheduler = build_scheduler("DPM++ 2M Karras", config)
    scheduler.set_timesteps(25)
    timesteps = scheduler.timesteps.tolist()
    assert len(set(timesteps)) < len(timesteps)


@pytest.mark.parametrize("sampler", ["Euler Karras", "DPM++ 2M Karras", "DPM++ 2M SDE Karras", "LMS Karras", "Euler", "DDIM",
                                     "UniPC"])
def test_each_sampler_paints_the_prompt_with_the_built_in_model(engine_builtin, sampler):
    from generation.diffusion import generate, validate_request

    request = validate_request({"prompt": "a large red square in the center on a white background", "width": 64,
                                "height": 64, "steps": 25, "sampler": sampler, "seed": 3,
                                "guidance_scale": GUIDANCE, "autoguidance_scale": AUTOGUIDANCE},
                               engine_builtin.limits)
    judged = e.judge(np.asarray(generate(engine_builtin, request).images[0]))
    assert (judged["color"], judged["background"]) == ("red", "white"), judged


@pytest.mark.parametrize("sampler", ["Euler Karras", "DDIM"])
def test_clip_guidance_keeps_the_prompt_on_the_built_in_models_zero_terminal_snr_schedule(engine_builtin, sampler):
    """Karras sigmas spend most steps above sigma 14.6 on this schedule, where the guidance update
    x0 - sigma^2 * gradient used to blow the image apart (colours right for a third of prompts)."""
    from generation.diffusion import generate, validate_request

    prompts = ["a large blue circle in the center on a yellow background",
               "a small white triangle on the left on a green background"]
    for prompt, want in zip(prompts, [("blue", "yellow"), ("white", "green")]):
        request = validate_request({"prompt": prompt, "width": 64, "height": 64, "steps": 25, "sampler": sampler,
                                    "seed": 11, "guidance_scale": GUIDANCE, "autoguidance_scale": AUTOGUIDANCE,
                                    "clip_guidance_scale": 10},
                                   engine_builtin.limits)
        result = generate(engine_builtin, request)
        judged = e.judge(np.asarray(result.images[0]))
        assert result.metadata[0]["clip_guided_steps"], "no step was guided"
        assert (judged["color"], judged["background"]) == want, judged


def test_the_engine_loads_the_shipped_guide_unet_for_autoguidance(engine_builtin):
    guide, unet = engine_builtin.guide_unet, engine_builtin.pipeline.unet
    assert engine_builtin.limits.has_guide_unet
    architecture = {k: v for k, v in unet.config.items() if k != "_name_or_path"}
    assert {k: v for k, v in guide.config.items() if k != "_name_or_path"} == architecture
    assert guide.dtype == unet.dtype == torch.float32
    weights = dict(unet.named_parameters())
    assert not all(torch.equal(tensor, weights[name]) for name, tensor in guide.named_parameters())  # earlier weights


def test_a_request_of_only_a_prompt_and_a_seed_gets_the_shipped_models_own_defaults(engine_builtin):
    from generation.diffusion import validate_request

    request = validate_request({"prompt": "a small red square at the top on a white background", "seed": 5},
                               engine_builtin.limits)
    assert (request.sampler, request.guidance_scale, request.autoguidance_scale) == ("Euler Karras", 1.5, 1.0)
    assert (request.steps, request.width, request.height) == (25, 64, 64)
    assert (engine_builtin.limits.max_width, engine_builtin.limits.max_height) == (256, 256)


def test_autoguidance_at_the_defaults_keeps_more_of_the_shipped_models_squares(pipe):
    """Why the model ships a guide UNet: without it, this UNet rounds a third of its squares into
    cushions (judged circles). 48 square prompts, the defaults (guidance 1.5, autoguidance 1.0)
    against the previous default (guidance 2.0, no autoguidance); docs/MODEL.md has the 200-prompt
    numbers."""
    from generation.diffusion.autoguidance import AutoguidedUNet, load_guide_unet
    from generation.diffusion.dataset import evaluation_prompts
    from generation.diffusion.engine import job_pipeline

    squares = [w for w in evaluation_prompts(200, seed=7) if w["shape"] == "square"][:48]
    guide = load_guide_unet(MODEL / "guide_unet", dtype=torch.float32)
    guided = job_pipeline(pipe, pipe.scheduler, AutoguidedUNet(pipe.unet, guide, AUTOGUIDANCE, GUIDANCE))
    right = {}
    for name, p, guidance in (("autoguided", guided, GUIDANCE), ("plain", pipe, 2.0)):
        images = e.pipeline_images(p, squares, seed=70_000, steps=25, guidance_scale=guidance, batch_size=24)
        right[name] = sum(e.judge(im)["shape"] == "square" for im in images)
    assert len(squares) == 48
    assert right["autoguided"] > right["plain"], right


def test_img2img_on_the_built_in_model_changes_the_named_colour_and_keeps_what_the_prompt_leaves_out(engine_builtin):
    """The prompt names only the new colour and the shape: the background can only come from the
    source. (On this zero-terminal-SNR schedule diffusers' own rule would start Karras strength 0.6
    at sigma 288 and return the text-to-image picture; the engine starts at the noise level of
    t = 0.6 T -- `strength_schedule`.)"""
    from PIL import Image

    from generation.diffusion import SourceImages, generate, validate_request
    from generation.diffusion.dataset import render

    kept = changed = 0
    for case in e.edit_cases(4, seed=11, attribute="color"):
        source = Image.fromarray(render(case.spec))
        request = validate_request({"prompt": f"a {case.new_value} {case.spec.shape}", "mode": "img2img",
                                    "denoising_strength": 0.6, "seed": 5}, engine_builtin.limits)
        judged = e.judge(np.asarray(generate(engine_builtin, request, source=SourceImages(source)).images[0]))
        changed += judged["color"] == case.new_value
        kept += judged["background"] == case.spec.background
    assert changed >= 3 and kept >= 3, (changed, kept)


def test_img2img_on_the_built_in_model_is_plain_diffusers_with_the_schedule_it_records(engine_builtin):
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    from generation.diffusion import SourceImages, generate, validate_request
    from generation.diffusion.dataset import render
    from generation.diffusion.samplers import SAMPLERS

    source = Image.fromarray(render(e.edit_cases(1, seed=2, attribute="color")[0].spec))
    request = validate_request({"prompt": "a green circle", "mode": "img2img", "denoising_strength": 0.7, "seed": 8,
                                "autoguidance_scale": 0}, engine_builtin.limits)
    result = generate(engine_builtin, request, source=SourceImages(source))
    call = result.metadata[0]["source"]["diffusers_call"]
    assert call["num_inference_steps"] > request.steps  # stretched: Karras steps on a zero-terminal-SNR schedule
    assert int(call["num_inference_steps"] * call["strength"]) == int(request.steps * 0.7)  # as many steps run
    # its own copy of the weights, with the engine's kernels (batch-invariant on the CPU)
    plain = with_engine_kernels(StableDiffusionImg2ImgPipeline.from_pretrained(MODEL, dtype=torch.float32))
    plain.set_progress_bar_config(disable=True)
    plain.scheduler = SAMPLERS[request.sampler].build(engine_builtin.scheduler_config)
    expected = plain(prompt=request.prompt, image=source, guidance_scale=request.guidance_scale,
                     generator=[torch.Generator("cpu").manual_seed(8)], **call).images[0]
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected))
