"""Every offered sampler makes a stored, viewable image on the built-in model through each entry
point -- the generate page, the REST API and A1111's txt2img -- with a real worker running the job.

Issue 23: every job of DPM++ 2M and its variants failed ("internal error") because the scheduler
config in its metadata held -inf, which is not JSON (SQLite's JSON_VALID check refused the row);
the engine tests passed because they never stored a job.
"""

import base64
import io
import json

import dramatiq
import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage
from rest_framework.test import APIClient

from generation.diffusion import SAMPLERS
from generation.models import Generation
from generation.registry import BUILTIN_SLUG, register_builtin_model
from tests.api.conftest import fast_passwords, fresh_limits, make_token  # noqa: F401 -- autouse fixtures
from tests.generation.conftest import run_queue, start_worker, stop_worker
from tests.generation.diffusion.conftest import one_torch_thread  # noqa: F401 -- module fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("one_torch_thread")]

PROMPT, SEED, STEPS = "a red circle", 5, 2  # at the built-in model's own size (64x64) and guidance


@pytest.fixture(scope="module")
def shared_worker():
    """One worker for the whole module: its jobs run on the built-in model, loaded once."""
    broker = dramatiq.get_broker()
    broker.flush_all()
    worker = start_worker(broker)
    yield worker
    stop_worker(worker)
    broker.flush_all()


@pytest.fixture
def builtin(db):
    model = register_builtin_model()  # what a fresh database has (migrate registers it)
    assert model.slug == BUILTIN_SLUG and model.is_default
    return model


def through_the_generate_page(person, sampler, worker) -> int:
    client = Client()
    client.force_login(person)
    response = client.post(reverse("generation:generate"), {
        "model": BUILTIN_SLUG, "prompt": PROMPT, "sampler": sampler, "steps": STEPS, "seed": SEED, "num_images": 1})
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Generation.objects.get(owner=person)
    assert response["Location"] == job.get_absolute_url()
    run_queue(worker.broker, worker)
    return job.pk


def through_the_rest_api(person, sampler, worker) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(person)}")
    response = client.post("/api/v1/generations/", {"prompt": PROMPT, "sampler": sampler, "steps": STEPS,
                                                    "seed": SEED}, format="json")
    assert response.status_code == 202, response.content
    run_queue(worker.broker, worker)
    return response.json()["id"]


def through_a1111_txt2img(person, sampler, worker) -> int:
    client = APIClient()
    basic = base64.b64encode(f"anyone:{make_token(person)}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {basic}")
    response = client.post("/sdapi/v1/txt2img", {"prompt": PROMPT, "sampler_name": sampler, "steps": STEPS,
                                                 "seed": SEED}, format="json")  # waits for the job
    assert response.status_code == 200, response.content
    body = response.json()
    [encoded] = body["images"]
    png = PILImage.open(io.BytesIO(base64.b64decode(encoded)))
    assert f"Sampler: {sampler}," in png.text["parameters"]
    return json.loads(body["info"])["job_id"]


ENTRY_POINTS = {"page": through_the_generate_page, "rest": through_the_rest_api, "a1111": through_a1111_txt2img}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_makes_a_stored_viewable_image(sampler, entry, builtin, alice, shared_worker):
    job = Generation.objects.get(pk=ENTRY_POINTS[entry](alice, sampler, shared_worker))
    assert job.status == Generation.Status.SUCCEEDED, job.error_detail or job.status
    assert (job.model, job.params["sampler"], job.params["steps"]) == (builtin, sampler, STEPS)
    json.dumps(job.metadata, allow_nan=False)  # strict JSON (SQLite's JSON_VALID took it)

    [image] = job.images.all()
    assert image.sampler == sampler and image.seed == SEED
    json.dumps(image.metadata, allow_nan=False)
    assert image.metadata["scheduler"]["class"] == SAMPLERS[sampler].scheduler_class
    with image.file.open("rb") as handle:
        png = PILImage.open(handle)
        png.load()
    assert png.size == (builtin.default_width, builtin.default_height)
    assert f"Sampler: {sampler}," in png.text["parameters"] and f"Seed: {SEED}," in png.text["parameters"]

    client = Client()
    client.force_login(alice)
    page = client.get(image.get_absolute_url())
    assert page.status_code == 200
    assert sampler in page.content.decode()
