"""The A1111-compatible API, called the way A1111 clients call it: plain `requests`, A1111's
field names, HTTP Basic with the token as password."""

import base64
import io
import json
import threading
import time

import pytest
import requests
from django.conf import settings as django_settings
from django.utils import timezone
from PIL import Image as PILImage

from generation.a1111 import check_options
from generation.a1111.names import split_title
from generation.diffusion import directory_content_hash, write_png
from generation.models import DiffusionModel, Generation
from generation.registry import register_builtin_model
from generation.services import cancel_generation, submit_generation
from tests.api.conftest import make_image, make_token, png_bytes

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
    ("firstpass_image", "data:image/png;base64,AAAA"), ("restore_faces", True), ("tiling", True), ("styles", ["cinematic"]),
    ("subseed_strength", 0.5), ("alwayson_scripts", {"ADetailer": {"args": [True, {"ad_model": "face.pt"}]}}),
    ("script_name", "x/y/z plot"),
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
    assert [s["name"] for s in sdapi.get(f"{sdapi.base}/schedulers").json()] == ["automatic", "karras", "normal"]


def test_setting_sd_model_checkpoint_chooses_the_model_for_that_tokens_later_requests(
        sdapi, live_server, tiny_model, alice, settings):
    settings.LDM_A1111_TIMEOUT_SECONDS = 1
    other = DiffusionModel.objects.create(name="Other", slug="other", source=tiny_model.source,
                                          revision=tiny_model.revision, default_width=32, default_height=32, max_width=64, max_height=64)
    titles = {m["model_name"]: m["title"] for m in sdapi.get(f"{sdapi.base}/sd-models").json()}
    assert sdapi.get(f"{sdapi.base}/options").json()["sd_model_checkpoint"] == titles["tiny"]
    assert titles["other"].startswith("other [")
    response = sdapi.post(f"{sdapi.base}/options", json={"sd_model_checkpoint": "other"})
    assert response.status_code == 200 and response.json() is None
    assert sdapi.get(f"{sdapi.base}/options").json()["sd_model_checkpoint"] == titles["other"]
    job = sdapi.post(f"{sdapi.base}/txt2img", json={"prompt": "a red circle", "steps": 2}).json()["job"]
    assert job["model"] == "other"
    assert Generation.objects.get(pk=job["id"]).model == other, "the job runs on the chosen model"

    second = requests.Session()
    second.auth = ("anything", make_token(alice, ("read", "generate")))
    assert second.get(f"{sdapi.base}/options").json()["sd_model_checkpoint"] == titles["tiny"], "per token"
    refused = sdapi.post(f"{sdapi.base}/options", json={"sd_model_checkpoint": "missing"})
    assert refused.status_code == 422 and "sd_model_checkpoint" in refused.json()["detail"][0]["loc"]
    assert sdapi.get(f"{sdapi.base}/options").json()["sd_model_checkpoint"] == titles["other"], \
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


# --- One model identity (issue 23) -------------------------------------------------------------------

def test_the_built_in_model_has_one_identity_in_sd_models_options_info_and_its_pngs(live_server, alice, worker):
    DiffusionModel.objects.all().delete()
    builtin = register_builtin_model()
    session = requests.Session()
    session.auth = ("anything", make_token(alice, ("read", "generate")))
    base = f"{live_server.url}/sdapi/v1"
    digest = directory_content_hash(django_settings.LDM_BUILTIN_MODEL_DIR)
    [item] = session.get(f"{base}/sd-models").json()
    assert (item["hash"], item["sha256"], item["title"]) == (digest[:10], digest, f"ldm-shapes [{digest[:10]}]")
    options = session.get(f"{base}/options").json()
    assert (options["sd_model_checkpoint"], options["sd_checkpoint_hash"]) == (item["title"], digest)

    body = session.post(f"{base}/txt2img", json={"prompt": "a red circle", "steps": 2, "seed": 3}, timeout=120).json()
    info = json.loads(body["info"])
    parameters = PILImage.open(io.BytesIO(base64.b64decode(body["images"][0]))).text["parameters"]
    assert info["sd_model_hash"] == digest[:10] and f"Model hash: {digest[:10]}," in parameters
    png_model_name = parameters.split("Model: ", 1)[1].split(",")[0]
    assert png_model_name == "builtin_model"

    for name in (item["title"], "ldm-shapes", builtin.name, png_model_name, digest[:10], digest,
                 item["title"].upper(), f"  {item['title']}  ", f"ldm-shapes [{digest[:8]}]"):
        answer = session.post(f"{base}/options", json={"sd_model_checkpoint": name})
        assert answer.status_code == 200, (name, answer.text)
    for name in ("ldm-shapes [0123456789]", "builtin", digest[:9] + "x", ""):
        assert session.post(f"{base}/options", json={"sd_model_checkpoint": name}).status_code == 422, name


def test_a_checkpoint_name_is_read_in_linear_time_and_an_absurd_one_is_refused_quickly(tiny_model, alice):
    """Issue 24: `\\s*...\\s*$` on client text took 21 s for "a" + 80,000 spaces + "b"."""
    token = None  # no token: no model chosen, the default applies

    def seconds(length: int) -> float:
        names = ["a" + " " * length + "b", "a" + " " * length + "[" + "0" * length + "]", "x" * length + " [ab]  "]
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for name in names:
                errors, model = check_options({"sd_model_checkpoint": name}, token, "")
                assert model is None and len(errors["sd_model_checkpoint"]) < 400
                split_title(name)
            best = min(best, time.perf_counter() - started)
        return best

    short, long = seconds(20_000), seconds(200_000)
    assert long / short < 30, (short, long)  # linear: about 10 (or 1, refused by length); quadratic: 100


def test_every_option_get_answers_goes_back_unchanged_and_a_changed_fixed_one_is_named(sdapi, settings):
    settings.LDM_A1111_TIMEOUT_SECONDS = 0
    options = sdapi.get(f"{sdapi.base}/options").json()
    answer = sdapi.post(f"{sdapi.base}/options", json=options)
    assert answer.status_code == 200 and answer.json() is None
    # and as txt2img's override_settings
    job = sdapi.post(f"{sdapi.base}/txt2img", json={"prompt": "a red circle", "override_settings": options})
    assert job.status_code == 202, job.text
    for key, value in [("sd_vae", "None"), ("CLIP_stop_at_last_layers", 2), ("sd_checkpoint_hash", "0" * 64),
                       ("samples_format", "jpg"), ("not_an_option", 1)]:
        refused = sdapi.post(f"{sdapi.base}/options", json={**options, key: value})
        assert refused.status_code == 422, key
        assert [error["loc"] for error in refused.json()["detail"]] == [["body", key]]
    assert sdapi.post(f"{sdapi.base}/options", json={**options, "CLIP_stop_at_last_layers": "1.0"}).status_code == 200


# --- Progress and interrupt --------------------------------------------------------------------------

def webp_data_url(color=(200, 30, 30), size=(16, 16)) -> str:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="WEBP")
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_progress_carries_the_running_jobs_latest_preview_as_a_base64_png(sdapi, live_server, alice):
    job = submit_generation(alice, {"prompt": "a red circle", "steps": 4})
    Generation.objects.filter(pk=job.pk).update(status="running", started_at=timezone.now(), step=2, total_steps=4,
                                                preview=webp_data_url())
    progress = sdapi.get(f"{sdapi.base}/progress").json()
    image = PILImage.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert image.format == "PNG" and image.size == (16, 16) and image.convert("RGB").getpixel((8, 8))[0] > 150
    assert progress["progress"] == 0.5 and progress["state"]["sampling_step"] == 2
    skipped = sdapi.get(f"{sdapi.base}/progress", params={"skip_current_image": "true"}).json()
    assert skipped["current_image"] is None

    internal = sdapi.post(f"{live_server.url}/internal/progress", json={"id_task": progress["current_task"]}).json()
    assert internal["active"] and internal["live_preview"].startswith("data:image/") and internal["id_live_preview"] == 2
    again = sdapi.post(f"{live_server.url}/internal/progress", json={"id_live_preview": 2}).json()
    assert again["active"] and again["live_preview"] is None, "the same preview is not sent twice"

    Generation.objects.filter(pk=job.pk).update(preview="")
    assert sdapi.get(f"{sdapi.base}/progress").json()["current_image"] is None
    nobody = sdapi.post(f"{live_server.url}/internal/progress", json={"id_task": "task(txt2img-UNKNOWN)"}).json()
    assert not nobody["active"] and not nobody["queued"] and nobody["textinfo"] == "Waiting..."


@pytest.mark.parametrize("kept", [1, 0])
def test_an_interrupted_txt2img_answers_with_the_images_its_job_kept(sdapi, alice, settings, kept):
    settings.LDM_A1111_TIMEOUT_SECONDS = 60
    answers = {}
    request = threading.Thread(target=lambda: answers.update(response=sdapi.post(
        f"{sdapi.base}/txt2img", json={"prompt": "a red circle", "steps": 2, "force_task_id": "task(txt2img-X)"},
        timeout=60)))
    request.start()
    deadline = time.monotonic() + 30
    while not Generation.objects.filter(owner=alice).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    job = Generation.objects.get(owner=alice)
    # The task id is remembered just after the job row is stored: ask until it is (or time is up).
    while True:
        internal = sdapi.post(f"{sdapi.base.rsplit('/sdapi', 1)[0]}/internal/progress",
                              json={"id_task": "task(txt2img-X)"}).json()
        if internal["queued"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert internal["queued"], "force_task_id names the job for /internal/progress"
    images = [make_image(alice, generation=job, index=0, metadata={"interrupted": True}) for _ in range(kept)]
    cancel_generation(job)
    request.join(60)
    response = answers["response"]
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["interrupted"] is True and info["status"] == "cancelled"
    assert len(response.json()["images"]) == kept and info["image_ids"] == [image.pk for image in images]


# --- Probes, schedules, scripts, bodies -----------------------------------------------------------------

def test_the_probes_answer_in_a1111s_shapes(sdapi, live_server):
    empty = {"scripts": {"txt2img": [], "img2img": []}, "embeddings": {"loaded": {}, "skipped": {}},
             **{path: [] for path in ("loras", "prompt-styles", "sd-vae",
                                      "hypernetworks", "face-restorers", "realesrgan-models", "script-info",
                                      "extensions")}}
    for path, expected in empty.items():
        answer = sdapi.get(f"{sdapi.base}/{path}")
        assert answer.status_code == 200 and answer.json() == expected, path
    memory = sdapi.get(f"{sdapi.base}/memory").json()
    assert set(memory) == {"ram", "cuda"} and memory["ram"]["total"] > memory["ram"]["used"] > 0
    assert sdapi.get(f"{sdapi.base}/cmd-flags").json()["api"] is True
    for path in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "refresh-embeddings", "skip"):
        answer = sdapi.post(f"{sdapi.base}/{path}")
        assert answer.status_code == 200 and answer.json() is None, path
    ping = requests.get(f"{live_server.url}/internal/ping")
    assert ping.status_code == 200 and ping.json() == {}
    for method in ("get", "post"):
        missing = getattr(sdapi, method)(f"{sdapi.base}/no-such-thing")
        assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    assert requests.get(f"{live_server.url}/sdapi/v1/interrogate").json() == {"detail": "Not Found"}


def test_a_json_body_without_content_type_is_read_as_json(sdapi):
    options = sdapi.get(f"{sdapi.base}/options").json()
    raw = requests.Request("POST", f"{sdapi.base}/options", data=json.dumps(options).encode(), auth=sdapi.auth)
    prepared = raw.prepare()
    assert "Content-Type" not in prepared.headers
    answer = sdapi.send(prepared)
    assert answer.status_code == 200 and answer.json() is None
    form = sdapi.post(f"{sdapi.base}/options", data={"sd_vae": "Automatic"})  # form-encoded: not JSON
    assert form.status_code == 415


@pytest.mark.parametrize("sampler, scheduler, expected", [
    ("Euler", "normal", "Euler"), ("Euler a", "Automatic", "Euler a"), ("DPM++ 2M", "karras", "DPM++ 2M Karras"),
    ("DPM++ 2M Karras", "normal", "DPM++ 2M Karras"), (None, "Karras", "Euler Karras"), ("UniPC", "Normal", "UniPC"),
])
def test_a1111s_schedule_names_map_to_what_the_sampler_offers(sdapi, settings, sampler, scheduler, expected):
    settings.LDM_A1111_TIMEOUT_SECONDS = 0
    body = {"prompt": "a red circle", "steps": 2, "scheduler": scheduler}
    if sampler:
        body["sampler_name"] = sampler
    answer = sdapi.post(f"{sdapi.base}/txt2img", json=body)
    assert answer.status_code == 202, answer.text
    assert Generation.objects.get(pk=answer.json()["job"]["id"]).params["sampler"] == expected


@pytest.mark.parametrize("sampler, scheduler", [("DDIM", "karras"), ("Euler", "exponential"), ("Euler", "beta"),
                                                ("Euler", "sideways"), ("Euler", 7)])
def test_a_schedule_ldmsite_has_not_is_a_422_naming_scheduler(sdapi, sampler, scheduler):
    answer = sdapi.post(f"{sdapi.base}/txt2img", json={"prompt": "a red circle", "sampler_name": sampler,
                                                       "scheduler": scheduler})
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [["body", "scheduler"]]


@pytest.mark.parametrize("scripts", [{"ControlNet": {"args": []}}, {"Simple wildcards": []}, {"ADetailer": {}},
                                     {"ControlNet": {"args": []}, "animatediff": {"args": None}}])
def test_alwayson_scripts_entries_that_ask_nothing_are_accepted(sdapi, settings, scripts):
    settings.LDM_A1111_TIMEOUT_SECONDS = 0
    answer = sdapi.post(f"{sdapi.base}/txt2img", json={**FULL_PAYLOAD, "alwayson_scripts": scripts})
    assert answer.status_code == 202, answer.text


def test_png_info_reads_an_images_parameters(sdapi, tmp_path):
    parameters = ("a red circle\nNegative prompt: blue\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, "
                  "Size: 32x32, Model hash: 0123456789, Model: builtin_model")
    buffer = io.BytesIO()
    write_png(PILImage.new("RGB", (8, 8)), {"note": "ours"}, parameters, buffer)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    for image in (encoded, "data:image/png;base64," + encoded):
        body = sdapi.post(f"{sdapi.base}/png-info", json={"image": image}).json()
        assert body["info"] == parameters and body["items"] == {"ldmsite": '{"note": "ours"}'}
        assert body["parameters"]["Prompt"] == "a red circle" and body["parameters"]["Negative prompt"] == "blue"
        assert (body["parameters"]["Steps"], body["parameters"]["Seed"], body["parameters"]["Sampler"]) == \
            (20, 5, "Euler a")
        assert body["parameters"]["Model hash"] == "0123456789" and body["parameters"]["Size-1"] == 32
    plain = sdapi.post(f"{sdapi.base}/png-info", json={"image": base64.b64encode(png_bytes()).decode()}).json()
    assert plain == {"info": "", "items": {}, "parameters": {}}
    for bad in ("not base64!", base64.b64encode(b"not an image").decode(), 5, ""):
        refused = sdapi.post(f"{sdapi.base}/png-info", json={"image": bad})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "image"], bad


def test_png_info_does_not_parse_an_absurd_infotext(sdapi):
    buffer = io.BytesIO()
    write_png(PILImage.new("RGB", (8, 8)), {}, "a\n" + "k" * 400_000, buffer)
    started = time.perf_counter()
    body = sdapi.post(f"{sdapi.base}/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()}).json()
    assert time.perf_counter() - started < 5 and body["parameters"] == {} and len(body["info"]) > 400_000
