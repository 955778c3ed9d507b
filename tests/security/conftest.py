"""Fixtures of the security suite: people (an owner, someone else, staff), a model that is never
loaded (nothing here runs a job), an owner's images and album, API clients with tokens, and the
bounded, derandomised Hypothesis settings every fuzz test uses."""

import os
import tempfile

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from gallery.models import Album, AlbumItem, Image
from generation.models import DiffusionModel
from tests.api.conftest import make_image, make_token

# Hypothesis keeps nothing in the work tree, and a run is the same run every time (CI stays stable).
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "ldmsite-hypothesis"))
FUZZ = hypothesis_settings(
    max_examples=20, deadline=None, derandomize=True, database=None, print_blob=False,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure names its input anyway
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

User = get_user_model()
PASSWORD = "violet-lantern-4821"


@pytest.fixture(autouse=True)
def fast_and_roomy(settings):
    """Many requests and a few people: a fast password hasher, no throttling, no job limits, and
    txt2img answers 202 at once (no worker runs here)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LDM_API_RATE = "1000000/minute"
    settings.LDM_API_GENERATE_RATE = "1000000/minute"
    settings.LDM_MAX_ACTIVE_JOBS = 1_000_000
    settings.LDM_DAILY_IMAGE_QUOTA = 0
    settings.LDM_A1111_TIMEOUT_SECONDS = 0
    settings.AXES_ENABLED = False  # the login form is fuzzed too; lockout is tested elsewhere
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def model(db):
    DiffusionModel.objects.all().delete()
    return DiffusionModel.objects.create(name="Shapes", slug="shapes", source="/nonexistent", default_width=64,
                                         default_height=64, max_width=128, max_height=128, default_steps=4,
                                         default_sampler="Euler", is_default=True)


@pytest.fixture
def people(db):
    make = User.objects.create_user
    return {"owner": make("olive", "olive@example.com", PASSWORD),
            "other": make("oscar", "oscar@example.com", PASSWORD),
            "staff": make("stella", "stella@example.com", PASSWORD, is_staff=True)}


@pytest.fixture
def things(people, model):
    """The owner's images (private, public) and public album; someone else's public image."""
    owner, other = people["owner"], people["other"]
    private = make_image(owner, prompt="a private red circle")
    public = make_image(owner, prompt="a public blue square", visibility=Image.Visibility.PUBLIC, saved=True)
    theirs = make_image(other, prompt="a green triangle", visibility=Image.Visibility.PUBLIC, saved=True)
    album = Album.objects.create(owner=owner, title="Shapes", visibility=Album.Visibility.PUBLIC)
    AlbumItem.objects.create(album=album, image=public, position=1)
    AlbumItem.objects.create(album=album, image=private, position=2)
    return {"private": private, "public": public, "theirs": theirs, "album": album}


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_client(user, scopes=("read", "generate", "write")) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(user, scopes)}")
    return client
