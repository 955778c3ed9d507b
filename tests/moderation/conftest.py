"""Moderation fixtures: the gallery's people and images, the job tests' tiny model and worker,
and signed-in clients."""

import pytest
from django.test import Client

from tests.gallery.conftest import make_image, model, people  # noqa: F401  (fixtures)
from tests.generation.conftest import (alice, bob, broker, staff, tiny_model, tiny_pipeline_dir,  # noqa: F401
                                       worker)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The suite makes many accounts; real hashing costs seconds each on a busy machine."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(people):
    return client_for(people["owner"])


@pytest.fixture
def other_client(people):
    return client_for(people["other"])


@pytest.fixture
def staff_client(people):
    return client_for(people["staff"])


@pytest.fixture
def public_image(people, make_image):
    return make_image(people["owner"], prompt="a green square on a white background", visibility="public",
                      saved=True)
