"""PNGs carry A1111's ``parameters`` chunk and our JSON; both read back into request fields."""

import io
import json

import pytest
from PIL import Image, PngImagePlugin

from generation.diffusion import (format_parameters, generate, parse_parameters, read_png_metadata,
                                  read_png_parameters, validate_request, write_png)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_generated_png_embeds_the_parameters_and_reproduces_its_request(engine_model, make_request, tmp_path):
    request = make_request(seed=40, num_images=2, negative_prompt="grey, dull", sampler="DPM++ 2M Karras",
                           clip_guidance_scale=200, clip_guidance_every=2)
    result = generate(engine_model, request)
    path = tmp_path / "second.png"
    write_png(result.images[1], result.metadata[1], result.parameters[1], path)

    with Image.open(path) as image:
        image.load()
        assert image.text["parameters"] == result.parameters[1]
        assert json.loads(image.text["ldmsite"])["model"]["hash"] == engine_model.content_hash
    fields = read_png_parameters(path)
    again = validate_request(fields, engine_model.limits)
    assert again.seed == 41 and again.num_images == 1
    assert again.to_dict() == {**request.to_dict(), "seed": 41, "num_images": 1}
    # and it regenerates the same picture
    redo = generate(engine_model, again)
    assert list(redo.images[0].getdata()) == list(result.images[1].getdata())


def test_write_png_accepts_a_file_object_and_keeps_unicode_prompts():
    image = Image.new("RGB", (8, 8), "red")
    parameters = "ein rotes Quadrat über Schnee\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x8"
    buffer = io.BytesIO()
    write_png(image, {"prompt": "ein rotes Quadrat über Schnee"}, parameters, buffer)
    metadata = read_png_metadata(buffer.getvalue())
    assert metadata["parameters"] == parameters
    assert metadata["fields"]["prompt"] == "ein rotes Quadrat über Schnee"


A1111_TEXT = (
    "masterpiece, a castle on a hill, (sunset:1.2)\n"
    "second prompt line\n"
    "Negative prompt: lowres, blurry\n"
    "more negative\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3052, Size: 640x448, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "style: abc123, detail: def456", '
    "Version: v1.10.1"
)


def test_an_a1111_parameters_string_is_parsed_into_request_fields():
    fields, extra = parse_parameters(A1111_TEXT)
    assert fields == {
        "prompt": "masterpiece, a castle on a hill, (sunset:1.2)\nsecond prompt line",
        "negative_prompt": "lowres, blurry\nmore negative",
        "steps": 28, "sampler": "DPM++ 2M Karras", "guidance_scale": 6.5, "seed": 3052,
        "width": 640, "height": 448,
    }
    assert extra["Model"] == "v1-5-pruned-emaonly" and extra["Model hash"] == "6ce0161689"
    assert extra["Lora hashes"] == "style: abc123, detail: def456"
    request = validate_request(fields)
    assert request.sampler == "DPM++ 2M Karras" and request.width == 640


def test_an_a1111_png_reads_back_with_one_image_per_seed_and_no_autoguidance():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG", pnginfo=info)
    assert read_png_parameters(buffer.getvalue()) == {
        "prompt": "a cat", "steps": 20, "sampler": "Euler a", "guidance_scale": 7.0, "seed": 5, "width": 512,
        "height": 512, "num_images": 1, "autoguidance_scale": 0.0}


def test_a_png_without_parameters_reads_as_empty():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    assert read_png_parameters(buffer.getvalue()) == {}


def test_prompts_with_commas_and_colons_survive_the_parameters_format():
    fields = {"prompt": "a, b: c", "negative_prompt": "", "steps": 5, "sampler": "Euler", "guidance_scale": 7.0,
              "seed": 1, "width": 64, "height": 64, "clip_guidance_scale": 150.0, "clip_cutouts": 4,
              "clip_guidance_every": 4, "clip_guidance_start": 0.2, "clip_guidance_end": 0.8}
    text = format_parameters(fields, model_name="my, model", model_hash="abc")
    parsed, extra = parse_parameters(text)
    assert parsed["prompt"] == "a, b: c" and extra["Model"] == "my, model"
    assert parsed["clip_guidance_scale"] == 150 and parsed["clip_guidance_start"] == 0.2
    assert "CLIP guidance window: 0.2-0.8" in text
