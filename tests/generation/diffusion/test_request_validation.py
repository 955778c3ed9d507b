import json
import subprocess
import sys
from pathlib import Path

import pytest

from generation.diffusion import (MAX_PROMPT_CHARS, SAMPLERS, GenerationRequest, ModelLimits, RequestValidationError,
                                  resolve_sampler, validate_request)

REPO = Path(__file__).resolve().parents[3]
LIMITS = ModelLimits(max_width=1024, max_height=768, min_width=64, min_height=64, max_steps=150)


def errors_for(raw, limits=LIMITS):
    with pytest.raises(RequestValidationError) as caught:
        validate_request(raw, limits)
    return caught.value.errors


def test_form_strings_become_a_typed_request():
    request = validate_request({
        "prompt": "  a red circle ", "negative_prompt": "blurry", "width": "512", "height": "384", "steps": "30",
        "guidance_scale": "7.5", "sampler": "euler a", "seed": "42", "num_images": "2", "eta": "0",
        "clip_guidance_scale": "", "clip_cutouts": "", "clip_guidance_every": "", "clip_guidance_start": "",
        "clip_guidance_end": "",
    }, LIMITS)
    assert request == GenerationRequest(prompt="a red circle", negative_prompt="blurry", width=512, height=384,
                                        steps=30, guidance_scale=7.5, sampler="Euler a", seed=42, num_images=2)
    assert request.seeds == [42, 43]
    assert request.clip_guidance is False


def test_json_types_are_accepted_and_defaults_come_from_the_model_limits():
    limits = ModelLimits(default_width=64, default_height=64, default_steps=12, default_sampler="DDIM",
                         default_guidance_scale=4.0, min_width=32, min_height=32)
    request = validate_request({"prompt": "a blue square", "seed": 3}, limits)
    assert (request.width, request.height, request.steps, request.sampler, request.guidance_scale) == \
        (64, 64, 12, "DDIM", 4.0)


@pytest.mark.parametrize("seed", [None, "", -1, "-1"])
def test_a_missing_seed_becomes_a_random_seed_that_is_recorded(seed):
    raw = {"prompt": "x"} if seed is None else {"prompt": "x", "seed": seed}
    seeds = {validate_request(raw).seed for _ in range(5)}
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert len(seeds) > 1


@pytest.mark.parametrize("field, value, words", [
    ("width", 1032, ["multiple of 8", "64", "1024"]),
    ("width", 100, ["multiple of 8"]),
    ("height", 32, ["64", "768"]),
    ("height", "tall", ["multiple of 8"]),
    ("steps", 0, ["1", "150"]),
    ("steps", 151, ["1", "150"]),
    ("steps", 2.5, ["whole number"]),
    ("guidance_scale", 31, ["0", "30"]),
    ("guidance_scale", "nan", ["0", "30"]),
    ("sampler", "Euler b", ["Euler a", "DPM++ 2M Karras"]),
    ("seed", 2**32, ["4294967295"]),
    ("seed", "lucky", ["whole number"]),
    ("num_images", 9, ["1", "8"]),
    ("num_images", 0, ["1", "8"]),
    ("eta", 1.5, ["0", "1"]),
    ("clip_guidance_scale", -1, ["0", "5000"]),
    ("clip_cutouts", 0, ["1", "64"]),
    ("clip_guidance_every", 0, ["1"]),
    ("clip_guidance_start", 1.2, ["0", "1"]),
    ("clip_guidance_end", -0.1, ["0", "1"]),
    ("negative_prompt", "n" * (MAX_PROMPT_CHARS + 1), [str(MAX_PROMPT_CHARS)]),
])
def test_an_invalid_field_gets_an_error_that_names_it_and_the_allowed_range(field, value, words):
    errors = errors_for({"prompt": "a red circle", field: value})
    assert list(errors) == [field]
    for word in words:
        assert word in errors[field]


def test_every_bad_field_is_reported_at_once():
    errors = errors_for({"prompt": "", "width": 7, "steps": 1000, "sampler": "nope"})
    assert set(errors) == {"prompt", "width", "steps", "sampler"}


def test_the_prompt_is_required_and_bounded():
    assert "required" in errors_for({})["prompt"]
    assert "required" in errors_for({"prompt": "   "})["prompt"]
    assert str(MAX_PROMPT_CHARS) in errors_for({"prompt": "p" * (MAX_PROMPT_CHARS + 1)})["prompt"]
    assert "text" in errors_for({"prompt": 12})["prompt"]


def test_unknown_fields_are_rejected_by_name():
    errors = errors_for({"prompt": "a", "cfg": 7, "denoise": 1})
    assert set(errors) == {"cfg", "denoise"}
    assert "unknown field" in errors["cfg"]


def test_booleans_are_not_numbers():
    assert "steps" in errors_for({"prompt": "a", "steps": True})


def test_clip_guidance_needs_a_clip_model_and_an_ordered_window():
    no_clip = ModelLimits(has_clip=False)
    assert "no CLIP" in errors_for({"prompt": "a", "clip_guidance_scale": 100}, no_clip)["clip_guidance_scale"]
    errors = errors_for({"prompt": "a", "clip_guidance_scale": 100, "clip_guidance_start": 0.6,
                         "clip_guidance_end": 0.4})
    assert "clip_guidance_start" in errors["clip_guidance_end"]
    # With guidance off the window is not checked.
    validate_request({"prompt": "a", "clip_guidance_start": 0.6, "clip_guidance_end": 0.4}, no_clip)


def test_sampler_aliases_resolve_to_the_a1111_names():
    assert resolve_sampler("k_euler_ancestral") == "Euler a"
    assert resolve_sampler("k_dpmpp_2m_karras") == "DPM++ 2M Karras"
    assert resolve_sampler("PLMS") == "PNDM"
    assert resolve_sampler("dpm++  2m") == "DPM++ 2M"
    assert validate_request({"prompt": "a", "sampler": "k_lms"}).sampler == "LMS"
    for name in ("Euler", "Euler a", "DDIM", "DPM++ 2M", "DPM++ 2M Karras", "UniPC", "PNDM", "LMS", "Heun"):
        assert name in SAMPLERS


def test_a_request_round_trips_through_json():
    request = validate_request({"prompt": "a", "seed": 5, "clip_guidance_scale": 50, "num_images": 3})
    again = GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request
    assert GenerationRequest.from_dict({**request.to_dict(), "model": "ignored"}) == request


def test_requests_are_frozen():
    request = validate_request({"prompt": "a"})
    with pytest.raises(AttributeError):
        request.steps = 3


def test_validation_imports_neither_torch_nor_django():
    code = ("import sys; import generation.diffusion as d; d.validate_request({'prompt': 'a'}); "
            "bad = [m for m in ('torch', 'diffusers', 'django') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- image to image and hires fix ---------------------------------------------------------------

def test_image_to_image_fields_from_a_form_become_a_typed_request():
    request = validate_request({
        "prompt": "a blue circle", "mode": "inpaint", "denoising_strength": "0.6", "mask_blur": "8",
        "inpainting_fill": "2", "inpaint_full_res": "on", "inpaint_full_res_padding": "16",
        "inpainting_mask_invert": "false", "resize_mode": "1", "seed": 1,
    }, LIMITS)
    assert (request.mode, request.denoising_strength, request.mask_blur, request.inpainting_fill) == \
        ("inpaint", 0.6, 8, 2)
    assert (request.inpaint_full_res, request.inpaint_full_res_padding, request.inpainting_mask_invert,
            request.resize_mode) == (True, 16, False, 1)
    assert request.has_source
    assert GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request


def test_a_text_to_image_request_keeps_its_image_fields_at_their_defaults():
    request = validate_request({"prompt": "a red circle", "seed": 1}, LIMITS)
    assert request.mode == "txt2img" and not request.has_source and not request.enable_hr
    assert request.output_size == (request.width, request.height)


@pytest.mark.parametrize("raw, field, words", [
    ({"mode": "img2img", "denoising_strength": 1.5}, "denoising_strength", "from 0 to 1"),
    ({"mode": "img2img", "steps": 2, "denoising_strength": 0.2}, "denoising_strength", "at least one step"),
    ({"mode": "sketch"}, "mode", "txt2img, img2img, inpaint, outpaint"),
    ({"mode": "outpaint"}, "outpaint_left", "at least one side"),
    ({"mode": "outpaint", "outpaint_left": 12}, "outpaint_left", "multiple of 8"),
    ({"mode": "outpaint", "width": 1024, "outpaint_right": 64}, "outpaint_right", "maximum is 1024"),
    ({"outpaint_top": 64}, "outpaint_top", "outpaint only"),
    ({"inpainting_fill": 4}, "inpainting_fill", "from 0 to 3"),
    ({"mask_blur": -1}, "mask_blur", "from 0 to 64"),
    ({"inpaint_full_res": "maybe"}, "inpaint_full_res", "true or false"),
    ({"mode": "img2img", "enable_hr": True}, "enable_hr", "text to image only"),
    ({"enable_hr": True, "width": 512, "hr_scale": 2.5}, "hr_scale", "maximum is 1024x768"),
    ({"enable_hr": True, "hr_resize_x": 128, "width": 512}, "hr_resize_x", "smaller than the first pass"),
    ({"hr_upscaler": "ESRGAN_4x"}, "hr_upscaler", "Latent"),
    ({"hr_sampler_name": "Heun++"}, "hr_sampler_name", "must be empty"),
    ({"enable_hr": True, "steps": 4, "hr_denoising_strength": 0.1}, "hr_denoising_strength", "at least one step"),
])
def test_bad_image_to_image_fields_are_refused_by_name(raw, field, words):
    errors = errors_for({"prompt": "a red circle", **raw})
    assert field in errors, errors
    assert words in errors[field]


def test_hires_and_outpaint_requests_say_the_size_of_the_image_they_make():
    hires = validate_request({"prompt": "a", "width": 256, "height": 192, "enable_hr": "on", "hr_scale": "1.5"}, LIMITS)
    assert hires.output_size == hires.hr_size == (384, 288)
    one_side = validate_request({"prompt": "a", "width": 256, "height": 192, "enable_hr": 1, "hr_resize_x": 512},
                                LIMITS)
    assert one_side.output_size == (512, 384)  # the other side keeps the aspect ratio
    outpaint = validate_request({"prompt": "a", "mode": "outpaint", "width": 256, "height": 256,
                                 "outpaint_left": 64, "outpaint_bottom": 32}, LIMITS)
    assert outpaint.output_size == (320, 288)
