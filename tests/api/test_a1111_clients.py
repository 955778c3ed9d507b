"""Two real A1111 client libraries from PyPI, unchanged and not monkeypatched, against a live ldmsite
(pytest-django's threaded live server and a real Dramatiq worker thread on the tiny model):
`webuiapi` 0.9.17 and `sd-backend-client` 0.5.0 (pinned in requirements-test.txt).

Every call of their READMEs that ldmsite claims to support (docs/API.md lists what each gets).
Tokens go in as the clients can send them: webuiapi only as the Basic-auth password (`set_auth`),
sd-backend-client as Basic (its `credentials_provider`) and as Bearer (any `requests` auth, through
its documented `set_auth`).
"""

import base64
import io
import threading
import time

import pytest
import requests
import webuiapi
from PIL import Image as PILImage
from sd_backend_client import (A1111Webservice, DiffusionParams, DiffusionRequestBody, GenerationError,
                               GenerationStatus, ServerError, connect_to_backend)

from generation.models import Generation
from tests.api.conftest import make_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

SIZE = {"width": 32, "height": 32}
LONG = {"steps": 150, "width": 64, "height": 64}  # the tiny model's most: seconds on a CPU, long enough to watch


class Bearer(requests.auth.AuthBase):
    def __init__(self, token):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


@pytest.fixture
def backend(live_server, tiny_model, token):
    """sd-backend-client's detection path: it probes the URL and logs in when asked to."""
    client = connect_to_backend(live_server.url, credentials_provider=lambda: ("anyone", token))
    yield client
    client.disconnect()


def png(encoded_or_image):
    if isinstance(encoded_or_image, str):
        encoded_or_image = PILImage.open(io.BytesIO(base64.b64decode(encoded_or_image)))
    assert encoded_or_image.format == "PNG"
    return encoded_or_image


def wait_until(condition, timeout=60.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def in_background(call):
    """Run a blocking client call on a thread; returns (thread, outcome dict)."""
    outcome = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as error:  # noqa: BLE001 — reported by the test
            outcome["error"] = error

    thread = threading.Thread(target=run, name="a1111-client-call", daemon=True)
    thread.start()
    return thread, outcome


# --- webuiapi ---------------------------------------------------------------------------------------

def test_webuiapi_txt2img_with_a_batch_and_seeds(api, worker, alice):
    result = api.txt2img(prompt="a red circle", negative_prompt="blue", seed=1003, cfg_scale=7, batch_size=2,
                         **SIZE)
    assert len(result.images) == 2 and result.image.size == (32, 32)
    assert result.info["all_seeds"] == [1003, 1004] and result.info["seed"] == 1003
    assert result.parameters["seed"] == 1003 and result.parameters["batch_size"] == 2
    [model] = api.get_sd_models()
    assert result.info["sd_model_hash"] == model["hash"] and len(model["hash"]) == 10
    assert f"Model hash: {model['hash']}" in png(result.image).text["parameters"]
    assert "Seed: 1004" in png(result.images[1]).text["parameters"]
    assert Generation.objects.get(pk=result.info["job_id"]).owner == alice


def test_webuiapi_progress_during_a_running_job_then_interrupt(api, worker):
    assert api.get_progress()["state"]["job_count"] == 0
    api.util_wait_for_ready(check_interval=0.1)  # idle: returns at once
    thread, outcome = in_background(lambda: api.txt2img(prompt="a red circle", seed=5, **LONG))
    seen = wait_until(lambda: (lambda p: p if p["state"]["sampling_step"] > 0 else None)(api.get_progress()))
    assert seen["state"]["job_count"] == 1 and seen["state"]["sampling_steps"] == 150
    assert 0 < seen["progress"] < 1 and seen["eta_relative"] >= 0
    assert png(seen["current_image"]).size[0] > 0, "the latest live preview, a base64 PNG as A1111 sends it"

    assert api.interrupt() == {}
    thread.join(120)
    result = outcome["result"]
    assert result.info["interrupted"] is True
    job = Generation.objects.get(pk=result.info["job_id"])
    assert job.status == "cancelled"
    kept = list(job.images.order_by("index"))
    assert job.step >= 1 and len(kept) == 1, "after a step, a cancelled job keeps its partial image"
    assert len(result.images) == 1 and result.info["image_ids"] == [kept[0].pk]
    assert png(result.image).size == (64, 64), "webuiapi's documented result.image works"
    assert api.get_progress()["state"]["job_count"] == 0


def test_webuiapi_set_model_get_models_and_the_options_round_trip(api, live_server, tiny_model):
    names = api.util_get_model_names()
    [title] = names
    assert title.startswith("tiny [") and api.util_get_current_model() == title
    api.util_set_model("tiny")  # closest match, then set_options with the title
    assert api.util_get_current_model() == title
    options = api.get_options()
    assert api.set_options(options) is None, "everything GET /options answers goes back unchanged"
    assert api.set_options({"sd_model_checkpoint": tiny_model.name}) is None
    refused = api.session.post(f"{api.baseurl}/options", json={**options, "CLIP_stop_at_last_layers": 2})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "CLIP_stop_at_last_layers"]


def test_webuiapi_samplers_schedulers_and_the_probes(api):
    samplers = api.util_get_sampler_names()
    assert {"Euler a", "DPM++ 2M Karras"} <= set(samplers)
    assert api.util_get_scheduler_names() == ["automatic", "karras", "normal"]
    assert "Lanczos" in [upscaler["name"] for upscaler in api.get_upscalers()]  # the hires fix's
    assert "Latent" in [mode["name"] for mode in api.get_latent_upscale_modes()] and api.get_loras() == []
    assert api.get_sd_vae() == [] and api.get_prompt_styles() == [] and api.get_hypernetworks() == []
    assert api.get_face_restorers() == [] and api.get_realesrgan_models() == []
    assert api.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.get_cmd_flags()["api"] is True
    assert set(api.get_memory()) == {"ram", "cuda"}
    assert api.refresh_checkpoints() is None and api.skip() is None
    assert api.custom_get("internal/ping") == {}
    assert not (api.has_controlnet or api.has_adetailer or api.has_animatediff)


def test_webuiapi_png_info_reads_the_parameters_of_an_image_it_made(api, worker):
    made = api.txt2img(prompt="a green square", seed=21, **SIZE)
    info = api.png_info(made.image)
    assert info.info.startswith("a green square") and "Seed: 21" in info.info
    assert info.json["parameters"]["Seed"] == 21 and info.json["parameters"]["Prompt"] == "a green square"
    assert info.json["parameters"]["Model hash"] == made.info["sd_model_hash"]


# --- sd-backend-client ------------------------------------------------------------------------------

def test_sd_backend_client_detects_a_webui_and_reports_its_capabilities(backend):
    assert isinstance(backend, A1111Webservice)
    capabilities = backend.get_capabilities()
    assert capabilities.scheduler and not capabilities.controlnet and not capabilities.interrogate
    assert not capabilities.ultimate_upscale and not capabilities.soft_inpainting
    [checkpoint] = backend.list_checkpoints()
    assert checkpoint.name == "tiny" and checkpoint.display_name.startswith("tiny [")
    samplers = {option.name for option in backend.list_samplers()}
    assert {"euler_ancestral", "euler", "dpmpp_2m", "ddim"} <= samplers
    assert [option.name for option in backend.list_schedulers()] == ["automatic", "karras", "normal"]
    assert [option.name for option in backend.list_upscalers()] == ["Lanczos", "Nearest", "Bicubic"]  # not "None"
    assert backend.list_loras() == [] and backend.list_vaes() == []
    assert backend.list_hypernetworks() == [] and backend.list_controlnet_models() == []
    assert backend.get_styles() == [] and backend.get_soft_inpainting_parameters() == []
    assert backend.get_latent_upscale_modes()[0] == "Latent"
    backend.refresh_checkpoints(), backend.refresh_vae(), backend.refresh_loras()
    config = backend.get_config()
    backend.set_config(config)  # the options round trip
    backend.set_config({"sd_model_checkpoint": checkpoint.name})
    with pytest.raises(ServerError) as refused:
        backend.set_config({"sd_vae": "None"})
    assert refused.value.status_code == 422


def test_sd_backend_client_txt2img_with_a_batch_seeds_its_default_schedule_and_a_model(backend, worker):
    [checkpoint] = backend.list_checkpoints()
    # The README's discovery example: ComfyUI's names, dpmpp_2m + karras.
    params = DiffusionParams(sd_model_name=checkpoint.name, sampler="dpmpp_2m", scheduler="karras",
                             prompt="a red circle", seed=42, batch_size=2, steps=2, **SIZE)
    result = backend.submit_txt2img(params).wait(timeout=120)
    assert result.seeds == [42, 43] and [image.size for image in result.images] == [(32, 32)] * 2
    assert result.raw_info.sd_model_hash == backend.get_models()[0].hash
    assert result.raw_info.sampler_name == "DPM++ 2M Karras"
    euler = backend.txt2img(DiffusionParams(sampler="euler", scheduler="karras", prompt="a red circle", steps=2,
                                            **SIZE))
    assert euler["info"].sampler_name == "Euler Karras"
    # DiffusionParams' own default schedule is "normal": the sampler's own spacing.
    plain = backend.txt2img(DiffusionRequestBody(prompt="a blue circle", seed=7, steps=2, n_iter=2, **SIZE))
    assert len(plain["images"]) == 2 and plain["info"].all_seeds == [7, 8]
    assert plain["info"].sampler_name == "Euler a"


def test_sd_backend_client_img2img_and_inpainting_answer_images_of_the_requested_size(backend, worker):
    source = PILImage.new("RGB", (40, 24), (200, 30, 30))
    params = DiffusionParams(prompt="a blue circle", seed=4, steps=2, init_images=[source], denoising_strength=0.6,
                             width=48, height=32)
    result = backend.submit_img2img(params).wait(timeout=120)
    assert [image.size for image in result.images] == [(48, 32)] and result.seeds == [4]
    mask = PILImage.new("L", (40, 24), 0)
    mask.paste(255, (20, 0, 40, 24))
    inpainted = backend.submit_inpaint(params.model_copy(update={"mask": mask, "mask_blur": 2,
                                                                 "inpaint_full_res": False})).wait(timeout=120)
    assert [image.size for image in inpainted.images] == [(48, 32)]
    assert [job.params["mode"] for job in Generation.objects.order_by("pk")] == ["img2img", "inpaint"]


def test_sd_backend_client_progress_while_running_then_cancel(backend, worker):
    handle = backend.submit_txt2img(DiffusionParams(prompt="a red circle", seed=9, **LONG))
    progress = wait_until(lambda: (lambda p: p if p.status is GenerationStatus.ACTIVE and p.progress else None)(
        handle.poll()))
    assert 0 < progress.progress < 1 and progress.eta_seconds is not None
    assert progress.preview is not None and progress.preview.size[0] > 0, "current_image, decoded by the client"
    assert backend.progress_check().state.sampling_steps == 150
    assert handle.cancel() is True
    with pytest.raises(GenerationError) as ended:
        handle.wait(timeout=120)
    assert ended.value.status is GenerationStatus.CANCELLED
    wait_until(lambda: Generation.objects.filter(status="cancelled").exists())


def test_sd_backend_client_with_the_token_as_bearer(live_server, tiny_model, token, worker):
    client = A1111Webservice(live_server.url)  # no credentials_provider: a 401 would raise AuthError
    client.set_auth(Bearer(token))
    try:
        [model] = client.get_models()
        result = client.txt2img(DiffusionRequestBody(prompt="a red circle", seed=3, steps=2, **SIZE))
        assert result["info"].sd_model_hash == model.hash and len(result["images"]) == 1
    finally:
        client.disconnect()
