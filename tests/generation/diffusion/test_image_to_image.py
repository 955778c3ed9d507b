"""Image to image on tiny seeded models: img2img, inpainting (plain and 9-channel UNets),
outpainting and the hires fix are the plain diffusers pipelines bit for bit with ldmsite's extras
off; seeds, previews, cancel, CLIP guidance, autoguidance and every sampler work in them; bad
sources are refused by field; the PNG parameters read back into the same request."""

import json
import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generation.diffusion import (SAMPLERS, GenerationCancelled, format_parameters, generate, load_pipeline,
                                  UnsupportedRequest, parse_parameters, read_png_parameters, validate_request,
                                  write_png)
from generation.diffusion.sources import (SourceImages, fill_masked, mask_from_image, outpaint_canvas,
                                          resize_image)

from .tiny import TINY_IMAGE_SIZE, build_tiny_components, build_tiny_inpainting_pipeline, with_engine_kernels

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = TINY_IMAGE_SIZE


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def same_pixels(ours, theirs):
    return len(ours) == len(theirs) and all(
        torch.equal(torch.from_numpy(pixels(a)), torch.from_numpy(pixels(b))) for a, b in zip(ours, theirs))


def picture(size=(SIZE, SIZE)):
    """A blue disc on red: what the person starts from."""
    image = Image.new("RGB", size, (200, 30, 30))
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(20, 20, 220))
    return image


def left_half_mask(size=(SIZE, SIZE)):
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((0, 0, size[0] // 2 - 1, size[1] - 1), fill=255)
    return mask


@pytest.fixture(scope="module")
def plain_sd(tiny_model_dir):
    """The tiny model as plain diffusers loads it (its own copy of the weights)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return with_engine_kernels(pipe)


def plain(base, cls, recorded):
    """``cls`` (an img2img or inpainting pipeline) from ``base`` with the scheduler a result recorded."""
    import diffusers

    pipe = cls.from_pipe(base)
    pipe.scheduler = getattr(diffusers, recorded["class"]).from_config(recorded["config"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generators(request, seeds=None):
    return [torch.Generator("cpu").manual_seed(seed) for seed in (seeds or request.seeds)]


def common(request):
    return dict(prompt=request.prompt, negative_prompt=request.negative_prompt or None,
                num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                num_images_per_prompt=request.num_images, eta=request.eta, generator=generators(request))


# --- bit for bit with plain diffusers ---------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M Karras", "Heun"])
def test_img2img_is_plain_diffusers_img2img_bit_for_bit(engine_model, plain_sd, make_request, sampler):
    from diffusers import StableDiffusionImg2ImgPipeline

    request = make_request(mode="img2img", sampler=sampler, steps=4, denoising_strength=0.6, num_images=2,
                           negative_prompt="blurry", seed=100)
    result = generate(engine_model, request, source=SourceImages(picture()), on_progress=lambda progress: None)
    assert result.metadata[0]["pipeline_class"] == "StableDiffusionImg2ImgPipeline"
    pipe = plain(plain_sd, StableDiffusionImg2ImgPipeline, result.metadata[0]["scheduler"])
    expected = pipe(image=picture(), strength=0.6, **common(request)).images
    assert same_pixels(result.images, expected)
    assert not np.array_equal(pixels(result.images[0]), pixels(picture())), "it repainted"


@pytest.mark.parametrize("full_res", [False, True])
def test_inpainting_with_a_plain_unet_is_plain_diffusers_inpainting_bit_for_bit(engine_model, plain_sd, make_request,
                                                                                full_res):
    """A 4-channel UNet inpaints by the pipeline's latent blending; the blurred mask is the
    pipeline's own ``mask_processor.blur``, "only masked" its ``padding_mask_crop``, and the
    result is pasted over the source through the mask (``apply_overlay``) as A1111 does."""
    from diffusers import StableDiffusionInpaintPipeline

    request = make_request(mode="inpaint", steps=4, denoising_strength=0.8, mask_blur=2, inpaint_full_res=full_res,
                           inpaint_full_res_padding=4)
    result = generate(engine_model, request, source=SourceImages(picture(), left_half_mask()))
    pipe = plain(plain_sd, StableDiffusionInpaintPipeline, result.metadata[0]["scheduler"])
    mask = pipe.mask_processor.blur(left_half_mask(), blur_factor=2)
    extra = {"padding_mask_crop": 4} if full_res else {}
    expected = pipe(image=picture(), mask_image=mask, height=SIZE, width=SIZE, strength=0.8, **extra,
                    **common(request)).images
    if not full_res:
        expected = [pipe.image_processor.apply_overlay(mask, picture(), image) for image in expected]
    assert same_pixels(result.images, expected)
    right = (slice(None), slice(SIZE // 2 + 8, None))  # past the blurred edge
    assert np.array_equal(pixels(result.images[0])[right], pixels(picture())[right]), "the unmasked half is kept"


@pytest.fixture(scope="module")
def inpainting_model(tmp_path_factory):
    return load_pipeline(str(build_tiny_inpainting_pipeline(tmp_path_factory.mktemp("tiny-inpaint"))),
                         device="cpu", dtype="fp32")


def test_an_inpainting_checkpoint_loads_and_its_9_channel_unet_inpaints_natively_as_plain_diffusers_does(
        inpainting_model):
    from diffusers import StableDiffusionInpaintPipeline

    assert json.loads((inpainting_model.path / "model_index.json").read_text())["_class_name"] == \
        "StableDiffusionInpaintPipeline"  # as real inpainting checkpoints are saved
    assert inpainting_model.pipeline.unet.config.in_channels == 9
    request = validate_request({"prompt": "a green square", "width": SIZE, "height": SIZE, "steps": 3, "seed": 5,
                                "sampler": "Euler a", "mode": "inpaint", "denoising_strength": 1.0, "mask_blur": 0},
                               inpainting_model.limits)
    result = generate(inpainting_model, request, source=SourceImages(picture(), left_half_mask()))
    pipe = plain(with_engine_kernels(StableDiffusionInpaintPipeline.from_pretrained(
                     inpainting_model.path, safety_checker=None, requires_safety_checker=False)),
                 StableDiffusionInpaintPipeline, result.metadata[0]["scheduler"])
    expected = pipe(image=picture(), mask_image=left_half_mask(), height=SIZE, width=SIZE, strength=1.0,
                    **common(request)).images
    expected = [pipe.image_processor.apply_overlay(left_half_mask(), picture(), image) for image in expected]
    assert same_pixels(result.images, expected)
    with pytest.raises(UnsupportedRequest, match="^mode: .*inpainting model"):
        generate(inpainting_model, validate_request({"prompt": "x", "width": SIZE, "height": SIZE, "steps": 2},
                                                    inpainting_model.limits))


def test_outpainting_extends_the_canvas_and_is_plain_diffusers_inpainting_of_its_border(engine_model, plain_sd,
                                                                                       make_request):
    from diffusers import StableDiffusionInpaintPipeline

    request = make_request(mode="outpaint", outpaint_left=8, outpaint_bottom=16, steps=4, denoising_strength=1.0,
                           mask_blur=2, seed=3)
    result = generate(engine_model, request, source=SourceImages(picture((48, 48))))  # fitted to 32x32 first
    assert result.images[0].size == request.output_size == (40, 48)
    canvas, mask = outpaint_canvas(picture((48, 48)).resize((SIZE, SIZE), Image.LANCZOS), 8, 0, 0, 16, overlap=2)
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((8 + 16, 16)) == 0 and mask.getpixel((8 + 1, 16)) == 255
    pipe = plain(plain_sd, StableDiffusionInpaintPipeline, result.metadata[0]["scheduler"])
    mask = pipe.mask_processor.blur(mask, blur_factor=2)
    expected = pipe(image=canvas, mask_image=mask, height=48, width=40, strength=1.0, **common(request)).images
    expected = [pipe.image_processor.apply_overlay(mask, canvas, image) for image in expected]
    assert same_pixels(result.images, expected)
    source = result.metadata[0]["source"]
    assert {key: source[key] for key in ("init_image_size", "mask_size", "fitted_size")} == \
        {"init_image_size": [48, 48], "mask_size": None, "fitted_size": [32, 32]}
    # On an SD-range schedule the pipeline is asked for the request's own steps and strength.
    assert source["diffusers_call"] == {"num_inference_steps": request.steps, "strength": request.denoising_strength}


@pytest.mark.parametrize("upscaler", ["Latent (bicubic)", "Lanczos"])
def test_hires_fix_is_plain_txt2img_then_plain_img2img_at_the_larger_size(engine_model, plain_sd, make_request,
                                                                         upscaler):
    from diffusers import StableDiffusionImg2ImgPipeline

    request = make_request(enable_hr=True, hr_upscaler=upscaler, hr_scale=1.5, steps=3, hr_second_pass_steps=4,
                           hr_denoising_strength=0.5, hr_sampler_name="DDIM", hr_prompt="a blue circle",
                           num_images=2, seed=40)
    result = generate(engine_model, request)
    assert [image.size for image in result.images] == [(48, 48)] * 2 == [request.output_size] * 2
    first = plain(plain_sd, type(plain_sd), result.metadata[0]["scheduler"])
    latent = upscaler.startswith("Latent")
    low = first(height=SIZE, width=SIZE, output_type="latent" if latent else "pil", **common(request)).images
    if latent:
        upscaled = torch.nn.functional.interpolate(low, size=(24, 24), mode="bicubic")
    else:
        upscaled = [image.resize((48, 48), Image.LANCZOS) for image in low]
    second = plain(plain_sd, StableDiffusionImg2ImgPipeline, result.metadata[0]["hires"]["scheduler"])
    assert result.metadata[0]["hires"]["scheduler"]["class"] == "DDIMScheduler"
    expected = second(**{**common(request), "prompt": "a blue circle", "num_inference_steps": 4},
                      image=upscaled, strength=0.5).images
    assert same_pixels(result.images, expected)


# --- seeds, previews, cancel --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_image_k_of_a_source_job_is_the_image_of_seed_plus_k(engine_model, make_request, mode):
    """The inpainting pipeline encodes one source with the first generator only; the engine
    encodes it once per image, so image k is the job of seed + k on its own."""
    source = SourceImages(picture(), left_half_mask() if mode == "inpaint" else None)
    fields = dict(mode=mode, steps=4, sampler="Euler a", inpainting_fill=2 if mode == "inpaint" else 1)
    batch = generate(engine_model, make_request(seed=60, num_images=3, **fields), source=source)
    single = generate(engine_model, make_request(seed=62, num_images=1, **fields), source=source)
    assert batch.seeds == [60, 61, 62]
    assert np.abs(pixels(batch.images[2]) - pixels(single.images[0])).max() <= 2  # batched matmuls round apart
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))


def test_hires_previews_arrive_for_every_step_of_both_passes(engine_model, make_request):
    progress = []
    request = make_request(enable_hr=True, hr_scale=2, steps=3, hr_second_pass_steps=4, hr_denoising_strength=0.5)
    generate(engine_model, request, on_progress=progress.append)
    assert [p.step for p in progress] == [1, 2, 3, 4, 5] and {p.total for p in progress} == {5}
    assert [p.preview.size for p in progress] == [(16, 16)] * 3 + [(32, 32)] * 2
    assert progress[-1].eta_seconds == 0


@pytest.mark.parametrize("hr_sampler", ["Heun", "DPM2 a", "PNDM", "UniPC"])
def test_the_hires_total_is_known_from_the_first_step_whatever_the_second_sampler(engine_model, make_request,
                                                                                  hr_sampler):
    """Second-order samplers evaluate twice a step; the total counted before the second pass
    starts is the one it then runs."""
    progress = []
    generate(engine_model, make_request(enable_hr=True, steps=3, hr_sampler_name=hr_sampler,
                                        hr_denoising_strength=0.7), on_progress=progress.append)
    assert len({p.total for p in progress}) == 1 and [p.step for p in progress] == list(range(1, len(progress) + 1))
    assert progress[-1].step == progress[-1].total > 3


def test_img2img_previews_count_the_steps_the_strength_leaves(engine_model, make_request):
    progress = []
    generate(engine_model, make_request(mode="img2img", steps=8, denoising_strength=0.5),
             source=SourceImages(picture()), on_progress=progress.append)
    assert [(p.step, p.total) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(p.preview.size == (16, 16) for p in progress)


def cancel_after(step):
    """(on_progress, should_cancel): the owner presses cancel during the step after ``step``."""
    state = {"cancel": False}

    def on_progress(progress):
        state["cancel"] = state["cancel"] or progress.step == step

    return on_progress, lambda: state["cancel"]


@pytest.mark.parametrize("fields, total, size", [
    ({"mode": "img2img", "steps": 8, "denoising_strength": 0.75}, 6, (SIZE, SIZE)),
    ({"mode": "inpaint", "steps": 8, "denoising_strength": 0.75}, 6, (SIZE, SIZE)),
    ({"mode": "outpaint", "outpaint_right": 8, "steps": 8, "denoising_strength": 0.75}, 6, (SIZE + 8, SIZE)),
    ({"enable_hr": True, "hr_upscaler": "Latent", "steps": 2, "hr_second_pass_steps": 4,
      "hr_denoising_strength": 1.0}, 6, (2 * SIZE, 2 * SIZE)),
    ({"enable_hr": True, "hr_upscaler": "Latent", "steps": 6, "hr_second_pass_steps": 2}, 7, (SIZE, SIZE)),
])
def test_cancel_mid_job_keeps_the_images_the_run_has_in_every_mode(engine_model, make_request, fields, total, size):
    """Cancelled during step 4: the hires job of 2 + 4 steps stops in its second pass (an image of
    the hires size), the one of 6 + 1 in its first (the first pass's size, decoded from x0)."""
    on_progress, should_cancel = cancel_after(3)
    source = SourceImages(picture(), left_half_mask()) if fields.get("mode") == "inpaint" else SourceImages(picture())
    with pytest.raises(GenerationCancelled) as caught:
        generate(engine_model, make_request(num_images=2, **fields), source=source if "mode" in fields else None,
                 on_progress=on_progress, should_cancel=should_cancel)
    assert (caught.value.step, caught.value.total) == (4, total)
    result = caught.value.result
    assert [image.size for image in result.images] == [size] * 2
    assert all(pixels(image).std() > 0 for image in result.images)
    assert (result.metadata[0]["interrupted"], result.metadata[0]["interrupted_at_step"]) == (True, 4)


# --- CLIP guidance, autoguidance, samplers ------------------------------------------------------------

def test_clip_guidance_changes_img2img_and_its_window_covers_the_steps_that_run(engine_model, make_request):
    """8 steps at strength 0.5 run the last 4; the window [0.25, 1) is laid over those 4."""
    fields = dict(mode="img2img", steps=8, denoising_strength=0.5, seed=8)
    plain_result = generate(engine_model, make_request(**fields), source=SourceImages(picture()))
    guided = generate(engine_model, make_request(**fields, clip_guidance_scale=1000, clip_guidance_every=1,
                                                 clip_guidance_start=0.25, clip_guidance_end=1.0, clip_cutouts=1),
                      source=SourceImages(picture()))
    assert guided.metadata[0]["clip_guided_steps"] == [1, 2, 3]
    assert not np.array_equal(pixels(plain_result.images[0]), pixels(guided.images[0]))
    assert guided.clip_scores[0] > plain_result.clip_scores[0]


def test_clip_guidance_runs_in_both_hires_passes(engine_model, make_request):
    result = generate(engine_model, make_request(enable_hr=True, steps=4, hr_denoising_strength=0.5,
                                                 clip_guidance_scale=500, clip_guidance_every=1,
                                                 clip_guidance_start=0.0, clip_guidance_end=1.0, clip_cutouts=1))
    assert result.metadata[0]["clip_guided_steps"] == [0, 1, 2, 3]
    assert result.metadata[0]["hires"]["clip_guided_steps"] == [0, 1]


@pytest.fixture(scope="module")
def guided_model(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("guided-i2i") / "model"
    shutil.copytree(tiny_model_dir, path)
    build_tiny_components(seed=1)["unet"].save_pretrained(path / "guide_unet")
    return load_pipeline(str(path), device="cpu", dtype="fp32")


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_autoguidance_changes_img2img_and_inpainting(guided_model, mode):
    def request(scale):
        return validate_request({"prompt": "a red circle", "width": SIZE, "height": SIZE, "steps": 4, "seed": 2,
                                 "sampler": "Euler", "mode": mode, "autoguidance_scale": scale}, guided_model.limits)

    source = SourceImages(picture(), left_half_mask() if mode == "inpaint" else None)
    off = generate(guided_model, request(0.0), source=source)
    on = generate(guided_model, request(2.0), source=source)
    assert not np.array_equal(pixels(off.images[0]), pixels(on.images[0]))
    assert "Autoguidance scale: 2" in on.parameters[0]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_runs_img2img(engine_model, make_request, sampler):
    result = generate(engine_model, make_request(mode="img2img", sampler=sampler, steps=3, denoising_strength=0.7,
                                                 eta=0.5), source=SourceImages(picture()))
    assert result.images[0].size == (SIZE, SIZE) and pixels(result.images[0]).std() > 0
    assert result.metadata[0]["scheduler"]["class"] == SAMPLERS[sampler].scheduler_class


def test_latent_noise_and_latent_nothing_start_the_masked_part_from_noise_and_from_zeros(engine_model, make_request):
    source = SourceImages(picture(), left_half_mask())
    images = {fill: generate(engine_model, make_request(mode="inpaint", inpainting_fill=fill, steps=4,
                                                        denoising_strength=0.5), source=source).images[0]
              for fill in (0, 1, 2, 3)}
    left = (slice(None), slice(0, SIZE // 2 - 4))
    for a, b in ((0, 1), (1, 2), (1, 3), (2, 3)):
        assert not np.array_equal(pixels(images[a])[left], pixels(images[b])[left]), (a, b)


def test_an_sdxl_model_does_img2img_and_inpainting(tmp_path):
    from .tiny import build_tiny_sdxl_pipeline

    model = load_pipeline(str(build_tiny_sdxl_pipeline(tmp_path)), dtype="fp32")
    for mode, pipeline_class in (("img2img", "StableDiffusionXLImg2ImgPipeline"),
                                 ("inpaint", "StableDiffusionXLInpaintPipeline")):
        request = validate_request({"prompt": "a green square", "width": SIZE, "height": SIZE, "steps": 2,
                                    "seed": 3, "mode": mode, "denoising_strength": 1.0}, model.limits)
        result = generate(model, request, source=SourceImages(picture(), left_half_mask()))
        assert result.images[0].size == (SIZE, SIZE)
        assert result.metadata[0]["pipeline_class"] == pipeline_class


def test_only_masked_with_nothing_masked_repaints_the_whole_picture_as_a1111(engine_model, make_request):
    request = make_request(mode="inpaint", inpaint_full_res=True, steps=3, mask_blur=0)
    result = generate(engine_model, request, source=SourceImages(picture(), Image.new("L", (SIZE, SIZE), 0)))
    assert result.images[0].size == (SIZE, SIZE)
    assert np.array_equal(pixels(result.images[0]), pixels(picture())), "nothing masked, nothing changed"


# --- bad sources ----------------------------------------------------------------------------------------

def test_a_missing_source_or_a_mask_of_another_size_is_refused_naming_the_field(engine_model, make_request):
    with pytest.raises(ValueError, match="^init_image: mode img2img needs a source image"):
        generate(engine_model, make_request(mode="img2img"))
    with pytest.raises(ValueError, match="^mask: mode inpaint needs a mask"):
        generate(engine_model, make_request(mode="inpaint"), source=SourceImages(picture()))
    with pytest.raises(ValueError, match="^mask: is 16x16, but the init image is 32x32"):
        generate(engine_model, make_request(mode="inpaint"), source=SourceImages(picture(), left_half_mask((16, 16))))


# --- source helpers -------------------------------------------------------------------------------------

def test_the_three_resize_modes_fit_a_wide_source_as_a1111_does():
    wide = picture((64, 32))
    assert all(resize_image(wide, 32, 32, mode).size == (32, 32) for mode in (0, 1, 2))
    cropped, filled = pixels(resize_image(wide, 32, 32, 1)), pixels(resize_image(wide, 32, 32, 2))
    assert tuple(cropped[16, 16]) == (20, 20, 220), "crop and resize: the disc fills the middle"
    assert tuple(filled[0, 16]) != (0, 0, 0), "resize and fill: the empty bands are stretched edges, not black"


def test_a_mask_painted_on_a_transparent_layer_is_read_by_its_alpha_and_fill_keeps_the_unmasked_pixels():
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((0, 0, 3, 7), fill=(255, 255, 255, 255))
    mask = mask_from_image(layer)
    assert mask.getpixel((1, 1)) == 255 and mask.getpixel((6, 1)) == 0
    assert mask_from_image(Image.new("RGB", (8, 8), "white")).getpixel((0, 0)) == 255
    filled = fill_masked(picture((8, 8)), mask)
    assert np.array_equal(pixels(filled)[:, 4:], pixels(picture((8, 8)))[:, 4:])
    assert not np.array_equal(pixels(filled)[:, :4], pixels(picture((8, 8)))[:, :4])


# --- PNG parameters ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"mode": "img2img", "denoising_strength": 0.55, "resize_mode": 1},
    {"mode": "inpaint", "denoising_strength": 0.9, "mask_blur": 0, "inpainting_fill": 3, "inpaint_full_res": True,
     "inpaint_full_res_padding": 40, "inpainting_mask_invert": True, "resize_mode": 2},
    {"mode": "inpaint", "mask_blur": 6, "inpainting_fill": 0},
    {"mode": "outpaint", "outpaint_left": 64, "outpaint_top": 8, "inpainting_fill": 2, "mask_blur": 8},
    {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent (nearest-exact)", "hr_denoising_strength": 0.45},
    {"enable_hr": True, "hr_resize_x": 768, "hr_resize_y": 0, "hr_upscaler": "Lanczos", "hr_second_pass_steps": 12,
     "hr_prompt": "sharp, detailed: a castle", "hr_negative_prompt": "blur", "hr_sampler_name": "DPM++ 2M Karras"},
])
def test_png_parameters_read_back_into_the_same_request(fields):
    request = validate_request({"prompt": "a cat, sitting", "negative_prompt": "dog", "steps": 20, "seed": 9,
                                "sampler": "Euler a", **fields})
    text = format_parameters(request.to_dict(), model_name="m", model_hash="abc")
    parsed, extra = parse_parameters(text)
    assert validate_request(parsed) == request, text
    assert set(extra) == {"Model", "Model hash"}


def test_an_a1111_hires_infotext_gives_the_hires_denoising_strength_and_an_img2img_one_the_img2img_one():
    hires, _ = parse_parameters("a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, "
                                "Size: 512x512, Denoising strength: 0.7, Hires upscale: 2, Hires steps: 10, "
                                "Hires upscaler: Latent, Hires sampler: Euler a")
    assert hires["enable_hr"] is True and hires["hr_denoising_strength"] == 0.7 and "mode" not in hires
    assert (hires["hr_scale"], hires["hr_second_pass_steps"], hires["hr_sampler_name"]) == (2.0, 10, "Euler a")
    inpaint, _ = parse_parameters("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, "
                                  "Denoising strength: 0.6, Mask blur: 4, Masked content: latent noise")
    assert (inpaint["mode"], inpaint["denoising_strength"], inpaint["inpainting_fill"]) == ("inpaint", 0.6, 2)
    img2img, _ = parse_parameters("a cat\nSteps: 20, Sampler: Euler, Seed: 1, Denoising strength: 0.3")
    assert (img2img["mode"], img2img["denoising_strength"]) == ("img2img", 0.3)


def test_a_generated_inpainting_png_reproduces_its_request_from_either_chunk(engine_model, make_request):
    request = make_request(mode="inpaint", inpainting_fill=0, inpaint_full_res=True, inpaint_full_res_padding=8,
                           denoising_strength=0.6, steps=3)
    result = generate(engine_model, request, source=SourceImages(picture(), left_half_mask()))
    buffer = io.BytesIO()
    write_png(result.images[0], result.metadata[0], result.parameters[0], buffer)
    assert validate_request(read_png_parameters(buffer.getvalue()), engine_model.limits) == request
    parsed, _ = parse_parameters(result.parameters[0])
    assert validate_request(parsed, engine_model.limits) == request
    again = generate(engine_model, validate_request(parsed, engine_model.limits),
                     source=SourceImages(picture(), left_half_mask()))
    assert same_pixels(again.images, result.images)
