"""Gallery fixtures: people, and images stored through the same service workers use."""

import itertools

import pytest
from django.contrib.auth import get_user_model
from PIL import Image as PILImage

from generation.outputs import store_generated_image
from generation.diffusion import format_parameters
from generation.diffusion.request import validate_request
from generation.models import DiffusionModel, Generation

User = get_user_model()
_seeds = itertools.count(100)


@pytest.fixture
def people(db):
    make = User.objects.create_user
    return {
        "owner": make("olive", "olive@example.com", "violet-lantern-4821"),
        "other": make("oscar", "oscar@example.com", "violet-lantern-4821"),
        "staff": make("stella", "stella@example.com", "violet-lantern-4821", is_staff=True),
    }


@pytest.fixture
def model(db):
    return DiffusionModel.objects.get_or_create(slug="shapes", defaults=dict(
        name="Shapes", source="/nonexistent", default_width=64, default_height=64))[0]


@pytest.fixture
def make_image(model):
    def make(owner, prompt="a large red circle in the center on a blue background", visibility="private",
             hidden=False, saved=False, color=(200, 40, 40)):
        request = validate_request({"prompt": prompt, "seed": next(_seeds), "width": 64, "height": 64,
                                    "steps": 25, "sampler": "DDIM"}, model.limits())
        job = Generation.objects.create(owner=owner, model=model, params=request.to_dict(), status="succeeded")
        metadata = {**request.to_dict(), "seed": request.seed, "model": {"name": model.name}}
        parameters = format_parameters(metadata)
        image = store_generated_image(job, 0, PILImage.new("RGB", (64, 64), color), metadata, parameters, 31.5)
        image.visibility, image.hidden, image.saved = visibility, hidden, saved
        image.save()
        return image

    return make
