"""The A1111-compatible API, called the way A1111 clients call it: plain `requests`, A1111's
field names, HTTP Basic with the token as password."""

import base64
import io
import json

import pytest
import requests
from PIL import Image as PILImage

from generation.models import DiffusionModel, Generation
from tests.api.conftest import make_token

pytestmark = pytest.mark.django_db(transaction=True)

# What A1111 clients send: the whole StableDiffusionTxt2ImgProcessingAPI, mostly at its defaults.
FULL_PAYLOAD = {
    "prompt": "a red circle", "negative_prompt": "", "styles": [], "seed": 11, "subseed": -1,
    "subseed_strength": 0, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": "Euler a",
    "scheduler": "Automatic", "batch_size": 2, "n_iter": 1, "steps": 2, "cfg_scale": 7, "width": 32, "height": 32,
    "restore_faces": False, "tiling": False, "do_not_save_samples": False, "do_not_save_grid": False, "eta": 0,
    "denoising_strength": 0, "s_min_uncond": 0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1,
    "override_settings": {}, "override_settings_restore_afterwards": True, "refiner_checkpoint": "",
    "refiner_switch_at": 0, "disable_extra_networks": False, "firstpass_image": "", "comments": {},
    "enable_hr": False, "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2, "hr_upscaler": "Latent",
    "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": "", "hr_sampler_name": "",
    "hr_scheduler": "", "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": "", "sampler_index": "Euler",
    "script_name": "", "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {},
    "infotext": "",
}


@pytest.fixture
def sdapi(live_server, tiny_model, alice):
    """A requests session as A1111 clients make one: Basic auth, any user name, the token as password."""
    token = make_token(alice, ("read", "generate"))
    session = requests.Session()
    session.auth = ("anything", token)
    session.base = f"{live_server.url}/sdapi/v1"
    session.token = token
    return session


def test_txt2img_answers_base64_pngs_the_parameters_and_an_info_string(sdapi, worker, alice):
    response = sdapi.post(f"{sdapi.base}/txt2img", json=FULL_PAYLOAD, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 2
    png = PILImage.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert png.size == (32, 32) and "Seed: 11" in png.text["parameters"]
    assert body["parameters"]["cfg_scale"] == 7 and body["parameters"]["sampler_name"] == "Euler a"
    info = json.loads(body["info"])
    assert info["all_seeds"] == [11, 12] and info["seed"] == 11
    assert info["sampler_name"] == "Euler a" and info["width"] == 32
    assert len(info["infotexts"]) == 2 and "Seed: 12" in info["infotexts"][1]
    job = Generation.objects.get(pk=info["job_id"])
    assert job.owner == alice and job.status == "succeeded", "an ordinary job, in the person's history"


@pytest.mark.parametrize("field, value", [
    ("enable_hr", True), ("restore_faces", True), ("tiling", True), ("styles", ["cinematic"]),
    ("subseed_strength", 0.5), ("alwayson_scripts", {"ADetailer": {"args": []}}), ("script_name", "x/y/z plot"),
    ("s_churn", 0.3), ("scheduler", "Exponential"), ("refiner_checkpoint", "sdxl-refiner"),
    ("override_settings", {"CLIP_stop_at_last_layers": 2}),
])
def test_a_field_ldmsite_cannot_honour_is_a_422_naming_it(sdapi, field, value):
    response = sdapi.post(f"{sdapi.base}/txt2img", json={**FULL_PAYLOAD, field: value}, timeout=30)
    assert response.status_code == 422, response.text
    locations = [".".join(error["loc"]) for error in response.json()["detail"]]
    assert any(field in location for location in locations), locations
    assert Generation.objects.count() == 0


@pytest.mark.parametrize("field, value", [("steps", 0), ("width", 33), ("cfg_scale", "lots"), ("batch_size", 0),
                                          ("sampler_name", "Nope"), ("prompt", "")])
def test_out_of_range_values_are_a_422_with_a1111s_field_names(sdapi, field, value):
    response = sdapi.post(f"{sdapi.base}/txt2img", json={**FULL_PAYLOAD, field: value}, timeout=30)
    assert response.status_code == 422, response.text
    assert [field] == [error["loc"][-1] for error in response.json()["detail"]]


def test_malformed_json_is_a_422_and_no_credentials_a_401_asking_for_basic(sdapi, live_server):
    broken = sdapi.post(f"{sdapi.base}/txt2img", data='{"prompt": ', headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and isinstance(broken.json()["detail"], list)
    anonymous = requests.get(f"{sdapi.base}/sd-models")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = requests.get(f"{sdapi.base}/sd-models", auth=("me", "ldm_wrong-token-000000000"))
    assert wrong.status_code == 401


def test_a_job_that_outlasts_the_wait_answers_202_and_goes_on(sdapi, settings):
    settings.LDM_A1111_TIMEOUT_SECONDS = 1
    response = sdapi.post(f"{sdapi.base}/txt2img", json={"prompt": "a red circle", "steps": 2}, timeout=30)
    assert response.status_code == 202
    body = response.json()
    assert body["images"] == [] and body["job"]["status"] == "queued"
    assert response.headers["Location"].endswith(body["job"]["url"])
    assert Generation.objects.get(pk=body["job"]["id"]).status == "queued"


def test_a_karras_scheduler_picks_the_karras_variant_of_the_sampler(sdapi, settings):
    settings.LDM_A1111_TIMEOUT_SECONDS = 1
    response = sdapi.post(f"{sdapi.base}/txt2img", json={"prompt": "a red circle", "steps": 2,
                                                         "sampler_name": "DPM++ 2M", "scheduler": "Karras"})
    assert Generation.objects.get(pk=response.json()["job"]["id"]).params["sampler"] == "DPM++ 2M Karras"


def test_sd_models_samplers_and_schedulers_have_a1111s_shapes(sdapi, tiny_model):
    tiny_model.revision = "ab" * 32
    tiny_model.save()
    [model] = sdapi.get(f"{sdapi.base}/sd-models").json()
    assert set(model) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert model == {"title": "tiny [ababababab]", "model_name": "tiny", "hash": "ababababab", "sha256": "ab" * 32,
                     "filename": model["filename"], "config": None}
    samplers = sdapi.get(f"{sdapi.base}/samplers").json()
    euler_a = next(s for s in samplers if s["name"] == "Euler a")
    assert set(euler_a) == {"name", "aliases", "options"} and "k_euler_a" in euler_a["aliases"]
    assert next(s for s in samplers if s["name"] == "DPM++ 2M Karras")["options"] == {"scheduler": "karras"}
    assert [s["name"] for s in sdapi.get(f"{sdapi.base}/schedulers").json()] == ["automatic", "karras"]


def test_setting_sd_model_checkpoint_chooses_the_model_for_that_tokens_later_requests(
        sdapi, live_server, tiny_model, alice, settings):
    settings.LDM_A1111_TIMEOUT_SECONDS = 1
    other = DiffusionModel.objects.create(name="Other", slug="other", source=tiny_model.source,
                                          default_width=32, default_height=32, max_width=64, max_height=64)
    assert sdapi.get(f"{sdapi.base}/options").json()["sd_model_checkpoint"] == "tiny"
    titles = [m["title"] for m in sdapi.get(f"{sdapi.base}/sd-models").json()]
    assert "other" in titles
    response = sdapi.post(f"{sdapi.base}/options", json={"sd_model_checkpoint": "other"})
    assert response.status_code == 200 and response.json() is None
    assert sdapi.get(f"{sdapi.base}/options").json()["sd_model_checkpoint"] == "other"
    job = sdapi.post(f"{sdapi.base}/txt2img", json={"prompt": "a red circle", "steps": 2}).json()["job"]
    assert job["model"] == "other"
    assert Generation.objects.get(pk=job["id"]).model == other, "the job runs on the chosen model"

    second = requests.Session()
    second.auth = ("anything", make_token(alice, ("read", "generate")))
    assert second.get(f"{sdapi.base}/options").json()["sd_model_checkpoint"] == "tiny", "per token"
    refused = sdapi.post(f"{sdapi.base}/options", json={"sd_model_checkpoint": "missing"})
    assert refused.status_code == 422 and "sd_model_checkpoint" in refused.json()["detail"][0]["loc"]
    assert sdapi.get(f"{sdapi.base}/options").json()["sd_model_checkpoint"] == "other", \
        "a refused choice leaves the earlier one in place"


def test_progress_reports_my_current_job_and_interrupt_cancels_it(sdapi, live_server, alice):
    idle = sdapi.get(f"{sdapi.base}/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    bearer = {"Authorization": f"Bearer {sdapi.token}"}
    job = requests.post(f"{live_server.url}/api/v1/generations/", json={"prompt": "a red circle", "steps": 2},
                        headers=bearer).json()
    progress = sdapi.get(f"{sdapi.base}/progress", params={"skip_current_image": "false"}).json()
    assert set(progress) >= {"progress", "eta_relative", "state", "current_image"}
    assert progress["state"]["job_count"] == 1 and progress["state"]["sampling_steps"] == 2
    assert progress["current_task"] == f"ldmsite-{job['id']}"
    assert sdapi.post(f"{sdapi.base}/interrupt").json() == {}
    assert Generation.objects.get(pk=job["id"]).status == "cancelled"


def test_a_read_only_token_cannot_generate_through_the_a1111_api(live_server, tiny_model, alice):
    reader = requests.Session()
    reader.auth = ("x", make_token(alice, ("read",)))
    assert reader.get(f"{live_server.url}/sdapi/v1/sd-models").status_code == 200
    refused = reader.post(f"{live_server.url}/sdapi/v1/txt2img", json={"prompt": "a red circle"})
    assert refused.status_code == 403 and "generate" in refused.json()["detail"]


def test_the_info_lists_a_jobs_autoguidance_where_a1111_lists_extension_parameters(tiny_model, alice):
    from generation.a1111 import txt2img_info
    from generation.services import submit_generation

    plain = submit_generation(alice, {"prompt": "a red circle"})
    tiny_model.has_guide_unet, tiny_model.default_autoguidance_scale = True, 1.0
    tiny_model.save()
    guided = submit_generation(alice, {"prompt": "a red circle"})
    assert txt2img_info(plain, [], {})["extra_generation_params"] == {}
    assert txt2img_info(guided, [], {})["extra_generation_params"] == {"Autoguidance scale": 1.0}
