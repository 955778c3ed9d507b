"""Property-based: arbitrary JSON, huge numbers, Unicode digits and deep nesting sent to every API
endpoint that takes a body or a query (/api/v1/, and A1111's /sdapi/v1/ and /internal/) never get
a 5xx, and refused input is answered with field-named errors: ``{"detail", "errors": {field: …}}``
(400), or A1111's 422 ``{"detail": [{"loc": ["body", field…], …}]}``.

Bounded and derandomised (`FUZZ` in conftest): the same examples every run. No worker runs: jobs
stay queued and txt2img answers 202 at once. (The schemathesis run in tests/api covers what the
schema documents; this covers what it does not: any key, any value, any nesting.)
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given

from generation.diffusion.request import REQUEST_FIELDS
from generation.models import Generation
from generation.sources import SOURCE_FIELDS
from tests.security.conftest import FUZZ, api_client
from tests.security.strategies import RAW_BODIES, SWEEP_TEXT, SWEEP_VALUES, bodies, query_params

PAGING = ("cursor", "limit")
# (method, path, the fields it knows): every /api/v1 route that reads a body or a query.
API = [
    ("POST", "/api/v1/generations/", (*REQUEST_FIELDS, "model", *SOURCE_FIELDS)),
    ("GET", "/api/v1/generations/", ("status", *PAGING)),
    ("POST", "/api/v1/generations/{job}/cancel/", ()),
    ("GET", "/api/v1/images/", ("visibility", "saved", "generation", "model", "q", *PAGING)),
    ("PATCH", "/api/v1/images/{private}/", ("visibility", "saved")),
    ("POST", "/api/v1/images/{theirs}/like/", ()),
    ("POST", "/api/v1/images/{theirs}/report/", ("reason", "text")),
    ("GET", "/api/v1/likes/", PAGING),
    ("GET", "/api/v1/reports/", PAGING),
    ("GET", "/api/v1/albums/", PAGING),
    ("POST", "/api/v1/albums/", ("title", "description", "visibility")),
    ("PATCH", "/api/v1/albums/{album}/", ("title", "description", "visibility", "cover")),
    ("POST", "/api/v1/albums/{album}/images/", ("images",)),
    ("POST", "/api/v1/albums/{album}/order/", ("images",)),
    ("GET", "/api/v1/explore/", ("order", "q", "model", *PAGING)),
    ("GET", "/api/v1/me/", ()),
    ("GET", "/api/v1/models/", ()),
]
TXT2IMG = ("prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength", "sampler_name", "scheduler",
           "batch_size", "n_iter", "steps", "cfg_scale", "width", "height", "eta", "s_noise", "s_churn",
           "override_settings", "override_settings_restore_afterwards", "enable_hr", "hr_scale", "force_task_id",
           "sampler_index", "script_name", "script_args", "send_images", "save_images", "alwayson_scripts")
A1111 = [
    ("POST", "/sdapi/v1/txt2img", TXT2IMG),
    ("POST", "/sdapi/v1/options", ("sd_model_checkpoint", "sd_checkpoint_hash", "eta_ddim", "s_noise",
                                   "CLIP_stop_at_last_layers", "sd_vae", "samples_format")),
    ("POST", "/sdapi/v1/png-info", ("image",)),
    ("GET", "/sdapi/v1/progress", ("skip_current_image",)),
    ("POST", "/internal/progress", ("id_task", "id_live_preview", "live_preview")),
]


@pytest.fixture
def job(people, model):
    return Generation.objects.create(owner=people["owner"], model=model, params={"prompt": "a red circle",
                                                                                 "num_images": 1})


def resolve(path: str, things: dict, job) -> str:
    return path.format(job=job.pk, private=things["private"].pk, theirs=things["theirs"].pk,
                       album=things["album"].pk)


# A valid request besides the field being swept, where an endpoint needs one.
BASE = {"/api/v1/generations/": {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64},
        "/api/v1/images/{theirs}/report/": {"reason": "other"}, "/api/v1/albums/": {"title": "Shapes"},
        "/sdapi/v1/txt2img": {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64}}


def check(response, *, a1111: bool, field: str | None = None) -> None:
    """No 5xx; refused input names its fields (`field`, when one field was the only thing wrong)."""
    status = response.status_code
    assert status < 500, (status, response.content[:300])
    if status not in (400, 422):
        return
    body = response.json()
    if a1111:
        assert status == 422, (status, body)
        assert body["detail"] and all(item["loc"][0] == "body" and item["msg"] for item in body["detail"]), body
        names = {".".join(str(part) for part in item["loc"][1:]) for item in body["detail"]}
    else:
        assert status == 400, (status, body)
        assert body["errors"] and all(isinstance(name, str) for name in body["errors"]), body  # "" if the client sent ""
        names = set(body["errors"])
    if field is not None:
        assert any(name == field or name.startswith(f"{field}.") for name in names), (field, body)


def send(client, method: str, path: str, fields, data) -> object:
    if method == "GET":
        return client.get(path, data)
    return client.generic(method, path, data, content_type="application/json")


def fuzz(endpoint, people, things, job, *, a1111: bool) -> None:
    method, path, fields = endpoint
    client = api_client(people["owner"])
    url = resolve(path, things, job)

    @FUZZ
    @given(data=query_params(fields) if method == "GET" else bodies(fields))
    def run(data):
        check(send(client, method, url, fields, data), a1111=a1111)

    run()
    if method == "GET":
        for field in fields:  # and each field, once with each hostile value
            for value in SWEEP_TEXT:
                check(send(client, method, url, fields, {field: value}), a1111=a1111, field=field)
        return
    for body in RAW_BODIES:
        check(send(client, method, url, fields, body), a1111=a1111)
    base = BASE.get(path, {})
    for field in fields:
        for value in SWEEP_VALUES:
            body = json.dumps({**base, field: value})
            check(send(client, method, url, fields, body), a1111=a1111, field=field)


@pytest.mark.parametrize("endpoint", API, ids=[f"{method} {path}" for method, path, _ in API])
def test_no_input_makes_an_api_endpoint_fail(people, things, job, endpoint):
    fuzz(endpoint, people, things, job, a1111=False)


TRAINING_FIELDS = ("name", "trigger", "album", "base_model", "rank", "steps", "learning_rate", "batch_size", "seed",
                   "images")


def test_no_input_makes_the_lora_training_endpoint_fail(people, things, job):
    """Starting a LoRA training: a valid body needs an album of the owner's and a local model, so no
    swept value is the only thing wrong here; every answer is still below 500, and a refusal names
    its fields."""
    client = api_client(people["owner"])

    @FUZZ
    @given(data=bodies(TRAINING_FIELDS))
    def run(data):
        check(send(client, "POST", "/api/v1/lora-trainings/", TRAINING_FIELDS, data), a1111=False)

    run()
    for body in RAW_BODIES:
        check(send(client, "POST", "/api/v1/lora-trainings/", TRAINING_FIELDS, body), a1111=False)
    for field in TRAINING_FIELDS:
        for value in SWEEP_VALUES:
            body = json.dumps({"name": "fuzzed", "trigger": "plsgn", "album": things["album"].pk, field: value})
            check(send(client, "POST", "/api/v1/lora-trainings/", TRAINING_FIELDS, body), a1111=False)


@pytest.mark.parametrize("endpoint", A1111, ids=[f"{method} {path}" for method, path, _ in A1111])
def test_no_input_makes_an_a1111_endpoint_fail(people, things, job, endpoint):
    fuzz(endpoint, people, things, job, a1111=True)


def test_a1111_deep_nesting_sent_without_content_type_is_refused(people, things):
    """A1111 clients may send JSON without a Content-Type; that body must go through the same parser."""
    client = api_client(people["owner"])
    for body in RAW_BODIES:
        check(client.generic("POST", "/sdapi/v1/txt2img", body, content_type=""), a1111=True)
