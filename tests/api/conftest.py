"""API test fixtures: the job fixtures (tiny model, people, a real worker), tokens, API clients
and images made without running a job."""

import io
import os
import tempfile

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from rest_framework.test import APIClient

from gallery.models import Image, unguessable_name
from ldmsite.accounts.tokens import create_token
from tests.generation.conftest import *  # noqa: F401,F403 — tiny_model, alice, bob, staff, broker, worker
from tests.generation.conftest import run_queue  # noqa: F401

ALL_SCOPES = ("read", "generate", "write")

# Hypothesis (under schemathesis) keeps caches in ./.hypothesis by default: not in the work tree.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "ldmsite-hypothesis"))


@pytest.fixture
def token(alice):
    """A token of alice's that may read and generate (what A1111 clients need)."""
    return make_token(alice, ("read", "generate"))


@pytest.fixture
def api(live_server, tiny_model, token):
    """webuiapi as its README makes one: the token as the password of --api-auth's Basic auth."""
    import webuiapi

    client = webuiapi.WebUIApi(baseurl=f"{live_server.url}/sdapi/v1", sampler="Euler a", steps=2)
    client.set_auth("anyone", token)
    return client


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """People are made by the dozen here; the real password hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_limits(settings):
    """Throttle counters live in the cache: start every test from zero, with roomy limits."""
    settings.LDM_API_RATE = "10000/minute"
    settings.LDM_API_GENERATE_RATE = "10000/minute"
    cache.clear()
    yield
    cache.clear()


def make_token(user, scopes=ALL_SCOPES, **options) -> str:
    return create_token(user, options.pop("name", "test"), list(scopes), **options)[1]


def client_for(user=None, scopes=ALL_SCOPES) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(user, scopes)}")
    return client


def png_bytes(size=(32, 32), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_image(owner, prompt="a red circle", **fields) -> Image:
    name = default_storage.save(unguessable_name("png"), ContentFile(png_bytes()))
    values = {"width": 32, "height": 32, "seed": 7, "prompt": prompt, "parameters": f"{prompt}\nSeed: 7"}
    values.update(fields)
    return Image.objects.create(owner=owner, file=name, **values)
