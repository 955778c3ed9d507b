"""A1111's img2img (and inpainting) and txt2img's hires fix on /sdapi/v1/, called as A1111 clients
call them: the real `webuiapi` 0.9.17 client (its whole default body, unchanged) against a live
server with a worker on the tiny model, and A1111's bodies mapped to ldmsite's request fields."""

import base64
import io

import numpy
import pytest
import requests
import webuiapi
from PIL import Image as PILImage

from generation.a1111 import img2img_request, txt2img_request
from generation.a1111.probes import infotext_dict
from generation.diffusion import parse_parameters
from generation.diffusion.request import IMAGE_UPSCALERS, LATENT_UPSCALERS
from generation.models import Generation
from tests.api.conftest import make_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def picture(size=(32, 32), color=(200, 30, 30)) -> PILImage.Image:
    return PILImage.new("RGB", size, color)


def half_mask(size=(32, 32)) -> PILImage.Image:
    """White (repaint) on the right half, black (keep) on the left."""
    mask = PILImage.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    return mask


def data_url(image: PILImage.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# What webuiapi 0.9.17's `img2img()` sends with its defaults (its own payload, copied), the init
# image and mask aside.
WEBUIAPI_IMG2IMG = {
    "resize_mode": 0, "denoising_strength": 0.75, "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True,
    "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0, "initial_noise_multiplier": 1, "prompt": "",
    "styles": [], "seed": -1, "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": 0,
    "seed_resize_from_w": 0, "batch_size": 1, "n_iter": 1, "steps": 20, "cfg_scale": 7.0, "image_cfg_scale": 1.5,
    "width": 512, "height": 512, "restore_faces": False, "tiling": False, "do_not_save_samples": False,
    "do_not_save_grid": False, "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
    "s_noise": 1, "override_settings": {}, "override_settings_restore_afterwards": True, "sampler_name": "Euler a",
    "scheduler": "automatic", "sampler_index": "Euler a", "include_init_images": False, "script_name": None,
    "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {},
}
SMALL = {"prompt": "a blue circle", "steps": 2, "width": 32, "height": 32, "seed": 7}


@pytest.fixture
def sdapi(live_server, tiny_model, token, settings):
    """Plain requests with Basic auth; no worker, so a request wrongly let through answers 202 at once."""
    settings.LDM_A1111_TIMEOUT_SECONDS = 1
    session = requests.Session()
    session.auth = ("anything", token)
    session.base = f"{live_server.url}/sdapi/v1"
    return session


def refused_fields(response) -> list[str]:
    assert response.status_code == 422, response.text
    return [".".join(error["loc"][1:]) for error in response.json()["detail"]]


# --- The real client, end to end ------------------------------------------------------------------

def test_webuiapi_img2img_answers_images_of_the_requested_size_from_an_init_image_of_another(api, worker, alice):
    result = api.img2img(images=[picture((40, 24))], prompt="a blue circle", seed=5, width=48, height=48,
                         batch_size=2)
    assert [image.size for image in result.images] == [(48, 48), (48, 48)]
    assert result.info["all_seeds"] == [5, 6] and result.info["denoising_strength"] == 0.75
    assert "Denoising strength: 0.75" in result.images[0].info["parameters"]
    assert result.parameters["init_images"] is None, "echoed only with include_init_images, as A1111 does"
    job = Generation.objects.get(pk=result.info["job_id"])
    assert job.owner == alice and job.params["mode"] == "img2img" and job.status == "succeeded"


def test_webuiapi_inpainting_with_a_mask_answers_images_of_the_requested_size(api, worker):
    result = api.img2img(images=[picture()], mask_image=half_mask(), prompt="a blue circle", seed=3,
                         width=32, height=32, inpainting_fill=1, include_init_images=True)
    assert len(result.images) == 1 and result.images[0].size == (32, 32)
    made, source = (numpy.asarray(image.convert("RGB")).astype(int) for image in (result.images[0], picture()))
    assert numpy.abs(made[:, :8] - source[:, :8]).mean() < 5, "the black of the mask is kept"
    assert numpy.abs(made[:, 24:] - source[:, 24:]).mean() > 20, "the white is repainted"
    assert result.info["extra_generation_params"]["Mask blur"] == 4
    assert result.parameters["mask"] and result.parameters["init_images"], "include_init_images echoes them"
    job = Generation.objects.get(pk=result.info["job_id"])
    assert job.params["mode"] == "inpaint" and job.params["inpaint_full_res"] is True  # A1111's default
    assert job.params["inpaint_full_res_padding"] == 0 and job.params["inpainting_fill"] == 1


def test_webuiapi_txt2img_with_the_hires_fix_answers_an_image_of_the_hires_size(api, worker):
    result = api.txt2img(prompt="a red circle", seed=9, width=32, height=32, enable_hr=True, hr_scale=2,
                         hr_upscaler=webuiapi.HiResUpscaler.Latent, denoising_strength=0.6)
    assert result.image.size == (64, 64)
    assert result.info["width"] == 32, "info gives the first pass's size, as A1111's"
    assert result.info["denoising_strength"] == 0.6
    assert result.info["extra_generation_params"]["Hires upscaler"] == "Latent"
    job = Generation.objects.get(pk=result.info["job_id"])
    assert job.params["enable_hr"] is True and job.params["hr_denoising_strength"] == 0.6


def test_the_upscalers_and_latent_upscale_modes_are_the_hires_fixs_in_a1111s_shapes(api):
    upscalers = api.get_upscalers()
    assert [upscaler["name"] for upscaler in upscalers] == list(IMAGE_UPSCALERS)
    assert all(set(upscaler) == {"name", "model_name", "model_path", "model_url", "scale"} for upscaler in upscalers)
    assert [mode["name"] for mode in api.get_latent_upscale_modes()] == list(LATENT_UPSCALERS)


# --- Refusals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("initial_noise_multiplier", 1.5), ("latent_mask", "x"), ("restore_faces", True), ("mask_round", False),
    ("styles", ["cinematic"]), ("subseed_strength", 0.3), ("resize_mode", 3), ("denoising_strength", 1.5),
    ("mask_blur_y", 8),
])
def test_an_img2img_field_ldmsite_cannot_honour_is_a_422_naming_it(sdapi, field, value):
    body = {**WEBUIAPI_IMG2IMG, **SMALL, "init_images": [data_url(picture())], "mask": data_url(half_mask())}
    if field == "mask_blur_y":
        del body["mask_blur"]  # without mask_blur, its two directions must agree
    response = sdapi.post(f"{sdapi.base}/img2img", json={**body, field: value}, timeout=30)
    assert field in refused_fields(response)
    assert Generation.objects.count() == 0


@pytest.mark.parametrize("init_images", [None, [], "not a list", ["not base64 at all!"],
                                         [base64.b64encode(b"GIF89a but not really").decode()],
                                         ["data:image/png;base64,AAAA", "data:image/png;base64,AAAA"]])
def test_a_missing_or_bad_init_image_is_a_422_naming_init_images(sdapi, init_images):
    body = {**WEBUIAPI_IMG2IMG, **SMALL, "init_images": init_images}
    response = sdapi.post(f"{sdapi.base}/img2img", json=body, timeout=30)
    assert refused_fields(response) == ["init_images"]
    assert Generation.objects.count() == 0


def test_a_mask_of_another_size_than_the_init_image_is_a_422_naming_mask(sdapi):
    body = {**WEBUIAPI_IMG2IMG, **SMALL, "init_images": [data_url(picture())], "mask": data_url(half_mask((16, 16)))}
    assert refused_fields(sdapi.post(f"{sdapi.base}/img2img", json=body, timeout=30)) == ["mask"]


@pytest.mark.parametrize("field, value", [("hr_checkpoint_name", "some-other-model"), ("hr_upscaler", "R-ESRGAN 4x+"),
                                          ("hr_scheduler", "Exponential"), ("hr_scale", 8),
                                          ("denoising_strength", 1.5), ("hr_sampler_name", "Nope")])
def test_a_hires_field_ldmsite_cannot_honour_is_a_422_naming_it(sdapi, field, value):
    body = {**SMALL, "enable_hr": True, "hr_scale": 2, field: value}
    assert refused_fields(sdapi.post(f"{sdapi.base}/txt2img", json=body, timeout=30)) == [field]
    assert Generation.objects.count() == 0


# --- A1111's bodies as ldmsite's request fields ---------------------------------------------------

def test_a1111s_img2img_body_becomes_an_img2img_job_and_with_a_mask_an_inpainting_one(tiny_model):
    image = data_url(picture())
    fields, model, errors = img2img_request({**WEBUIAPI_IMG2IMG, "init_images": [image], "denoising_strength": 0.5,
                                             "inpainting_fill": 2}, None)
    assert errors == {} and model == tiny_model
    assert fields["mode"] == "img2img" and fields["init_image"] == image and fields["denoising_strength"] == 0.5
    assert "inpainting_fill" not in fields and "mask" not in fields, "inpainting fields count only with a mask"
    mask = data_url(half_mask())
    fields, _, errors = img2img_request({"prompt": "x", "init_images": [image], "mask": mask,
                                         "mask_blur_x": 6, "mask_blur_y": 6}, None)
    assert errors == {} and fields["mode"] == "inpaint" and fields["mask"] == mask
    # omitted, A1111's defaults: only masked, no padding, fill, and both blur directions' value
    assert (fields["inpaint_full_res"], fields["inpaint_full_res_padding"], fields["inpainting_fill"],
            fields["mask_blur"]) == (True, 0, 0, 6)


def test_txt2img_maps_the_hires_fix_and_its_denoising_strength_only_when_enable_hr_is_on(tiny_model):
    body = {"prompt": "x", "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Lanczos", "denoising_strength": 0.4,
            "hr_second_pass_steps": 3, "hr_prompt": "y", "hr_sampler_name": "Use same sampler",
            "hr_checkpoint_name": "Use same checkpoint", "hr_scheduler": ""}
    fields, _, errors = txt2img_request(body, None)
    assert errors == {}
    assert {key: fields[key] for key in ("enable_hr", "hr_scale", "hr_upscaler", "hr_denoising_strength",
                                         "hr_second_pass_steps", "hr_prompt")} == {
        "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Lanczos", "hr_denoising_strength": 0.4,
        "hr_second_pass_steps": 3, "hr_prompt": "y"}
    assert "hr_sampler_name" not in fields, "the same sampler"
    fields, _, errors = txt2img_request({**body, "hr_sampler_name": "DPM++ 2M", "hr_scheduler": "karras",
                                         "hr_checkpoint_name": "tiny"}, None)
    assert errors == {} and fields["hr_sampler_name"] == "DPM++ 2M Karras"
    off, _, errors = txt2img_request({**body, "enable_hr": False, "hr_scale": 99, "hr_upscaler": "Nope"}, None)
    assert errors == {} and not any(key.startswith("hr_") or key == "enable_hr" for key in off)


def test_the_openapi_schema_describes_img2img_the_hires_fields_and_the_upscalers(client):
    schema = client.get("/api/schema/?format=json").json()
    img2img = schema["paths"]["/sdapi/v1/img2img"]["post"]
    reference = img2img["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][reference]["properties"]
    assert {"init_images", "mask", "denoising_strength", "mask_blur", "inpainting_fill", "inpaint_full_res",
            "inpaint_full_res_padding", "inpainting_mask_invert", "resize_mode",
            "include_init_images"} <= set(properties)
    txt2img = schema["paths"]["/sdapi/v1/txt2img"]["post"]
    reference = txt2img["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "Latent (nearest-exact)" in schema["components"]["schemas"][reference]["properties"]["hr_upscaler"][
        "description"]
    upscalers = schema["paths"]["/sdapi/v1/upscalers"]["get"]
    assert "hires fix" in upscalers["description"]


def test_png_info_gives_the_img2img_and_hires_entries_of_an_infotext_under_a1111s_keys():
    inpainted = infotext_dict(*parse_parameters(
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, Denoising strength: 0.6, "
        "Mask blur: 4, Inpaint area: Only masked, Masked area padding: 32"))
    assert {key: inpainted[key] for key in ("Denoising strength", "Mask blur", "Inpaint area", "Masked area padding")} \
        == {"Denoising strength": 0.6, "Mask blur": 4, "Inpaint area": "Only masked", "Masked area padding": 32}
    hires = infotext_dict(*parse_parameters(
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, Denoising strength: 0.5, "
        "Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent (nearest)"))
    assert {key: hires[key] for key in ("Denoising strength", "Hires upscale", "Hires steps", "Hires upscaler")} == {
        "Denoising strength": 0.5, "Hires upscale": 2, "Hires steps": 10, "Hires upscaler": "Latent (nearest)"}
