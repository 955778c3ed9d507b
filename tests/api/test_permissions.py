"""Who may do what, over every endpoint and method: the owner, another person, an anonymous
client and staff. Anything a person may not see is a 404; what they see but may not change
is a 403."""

import base64

import pytest
from django.db import transaction
from django.test import override_settings

from gallery.models import Album, AlbumItem, Image
from generation.services import submit_generation
from generation.training_jobs import submit_training
from tests.api.conftest import client_for, make_image, png_bytes

ACTORS = ("owner", "other", "anonymous", "staff")

# method, path, body, expected status for (owner, other, anonymous, staff)
MATRIX = [
    ("get", "/api/v1/me/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/models/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/models/tiny/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/generations/", None, (200, 200, 401, 200)),
    ("post", "/api/v1/generations/", {"prompt": "a red circle", "steps": 2}, (202, 202, 401, 202)),
    ("get", "/api/v1/generations/{job}/", None, (200, 404, 401, 200)),
    ("post", "/api/v1/generations/{job}/cancel/", None, (200, 404, 401, 200)),
    # A job's stored source picture and mask are as private as the job; a text-to-image job has none.
    ("get", "/api/v1/generations/{job_with_source}/source/init/", None, (200, 404, 401, 200)),
    ("get", "/api/v1/generations/{job_with_source}/source/mask/", None, (200, 404, 401, 200)),
    ("get", "/api/v1/generations/{job}/source/init/", None, (404, 404, 401, 404)),
    ("get", "/api/v1/images/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/images/{private}/", None, (200, 404, 401, 200)),
    ("get", "/api/v1/images/{public}/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/images/{hidden}/", None, (200, 404, 401, 200)),
    ("patch", "/api/v1/images/{private}/", {"saved": True}, (200, 404, 401, 403)),
    ("patch", "/api/v1/images/{public}/", {"visibility": "unlisted"}, (200, 403, 401, 403)),
    ("delete", "/api/v1/images/{private}/", None, (204, 404, 401, 403)),
    ("delete", "/api/v1/images/{public}/", None, (204, 403, 401, 403)),
    ("get", "/api/v1/images/{private}/file/", None, (200, 404, 401, 200)),
    ("get", "/api/v1/images/{public}/file/", None, (200, 200, 401, 200)),
    ("post", "/api/v1/images/{public}/like/", None, (200, 200, 401, 200)),
    ("post", "/api/v1/images/{private}/like/", None, (200, 404, 401, 200)),
    ("delete", "/api/v1/images/{public}/like/", None, (200, 200, 401, 200)),
    ("post", "/api/v1/images/{public}/report/", {"reason": "spam"}, (400, 201, 401, 201)),
    ("post", "/api/v1/images/{private}/report/", {"reason": "spam"}, (400, 404, 401, 201)),
    ("get", "/api/v1/likes/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/reports/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/albums/", None, (200, 200, 401, 200)),
    ("post", "/api/v1/albums/", {"title": "New"}, (201, 201, 401, 201)),
    ("get", "/api/v1/albums/{album_private}/", None, (200, 404, 401, 200)),
    ("get", "/api/v1/albums/{album_public}/", None, (200, 200, 401, 200)),
    ("patch", "/api/v1/albums/{album_private}/", {"title": "Renamed"}, (200, 404, 401, 403)),
    ("patch", "/api/v1/albums/{album_public}/", {"title": "Renamed"}, (200, 403, 401, 403)),
    ("delete", "/api/v1/albums/{album_private}/", None, (204, 404, 401, 403)),
    ("delete", "/api/v1/albums/{album_public}/", None, (204, 403, 401, 403)),
    ("post", "/api/v1/albums/{album_private}/images/", {"images": ["{public}"]}, (200, 404, 401, 403)),
    ("delete", "/api/v1/albums/{album_private}/images/{private}/", None, (204, 404, 401, 403)),
    ("post", "/api/v1/albums/{album_private}/order/", {"images": ["{private}"]}, (200, 404, 401, 403)),
    ("get", "/api/v1/explore/", None, (200, 200, 401, 200)),
    ("get", "/sdapi/v1/sd-models", None, (200, 200, 401, 200)),
    ("get", "/sdapi/v1/samplers", None, (200, 200, 401, 200)),
    ("get", "/sdapi/v1/schedulers", None, (200, 200, 401, 200)),
    ("get", "/sdapi/v1/options", None, (200, 200, 401, 200)),
    ("post", "/sdapi/v1/options", {"sd_model_checkpoint": "tiny"}, (200, 200, 401, 200)),
    ("get", "/sdapi/v1/progress", None, (200, 200, 401, 200)),
    ("post", "/sdapi/v1/interrupt", None, (200, 200, 401, 200)),
    ("post", "/sdapi/v1/txt2img", {"prompt": "a red circle", "steps": 2}, (202, 202, 401, 202)),
    # LoRAs: shared like images; a private or hidden one cannot be seen, downloaded or used by others.
    ("get", "/api/v1/loras/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/loras/{lora_private}/", None, (200, 404, 401, 200)),
    ("get", "/api/v1/loras/{lora_public}/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/loras/{lora_hidden}/", None, (200, 404, 401, 200)),
    ("get", "/api/v1/loras/{lora_private}/file/", None, (200, 404, 401, 200)),
    ("get", "/api/v1/loras/{lora_public}/file/", None, (200, 200, 401, 200)),
    ("get", "/api/v1/loras/{lora_hidden}/file/", None, (200, 404, 401, 200)),
    ("patch", "/api/v1/loras/{lora_private}/", {"visibility": "public"}, (200, 404, 401, 403)),
    ("patch", "/api/v1/loras/{lora_public}/", {"description": "mine"}, (200, 403, 401, 403)),
    ("delete", "/api/v1/loras/{lora_private}/", None, (204, 404, 401, 403)),
    ("delete", "/api/v1/loras/{lora_public}/", None, (204, 403, 401, 403)),
    ("post", "/api/v1/loras/{lora_public}/report/", {"reason": "spam"}, (400, 201, 401, 201)),
    ("post", "/api/v1/loras/{lora_private}/report/", {"reason": "spam"}, (400, 404, 401, 201)),
    ("post", "/api/v1/loras/{lora_hidden}/report/", {"reason": "spam"}, (400, 404, 401, 201)),
    ("post", "/api/v1/generations/", {"prompt": "a red circle <lora:private-lora:1>", "steps": 2},
     (202, 400, 401, 400)),
    ("post", "/api/v1/generations/", {"prompt": "a red circle <lora:alice/private-lora:1>", "steps": 2},
     (202, 400, 401, 400)),
    ("post", "/api/v1/generations/", {"prompt": "a red circle <lora:alice/hidden-lora:1>", "steps": 2},
     (202, 400, 401, 400)),
    ("post", "/api/v1/generations/", {"prompt": "a red circle <lora:alice/public-lora:1>", "steps": 2},
     (202, 202, 401, 202)),
    ("post", "/sdapi/v1/txt2img", {"prompt": "a red circle <lora:alice/private-lora:1>", "steps": 2},
     (202, 422, 401, 422)),
    # LoRA trainings are their owner's (and staff's) alone; the world's training already fills the
    # owner's cap of one active training, so the owner's second is a 429, others' albums a 400.
    ("get", "/api/v1/lora-trainings/", None, (200, 200, 401, 200)),
    ("post", "/api/v1/lora-trainings/", {"name": "new-lora", "trigger": "t", "album": "{album_private}"},
     (429, 400, 401, 400)),
    ("get", "/api/v1/lora-trainings/{training}/", None, (200, 404, 401, 200)),
    ("post", "/api/v1/lora-trainings/{training}/cancel/", None, (200, 404, 401, 200)),
    ("get", "/sdapi/v1/loras", None, (200, 200, 401, 200)),
    ("post", "/sdapi/v1/refresh-loras", None, (200, 200, 401, 200)),
]


@pytest.fixture
def world(tiny_model, alice, bob, staff):
    private = make_image(alice)
    public = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True)
    hidden = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True, hidden=True)
    album_private = Album.objects.create(owner=alice, title="Mine")
    AlbumItem.objects.create(album=album_private, image=private, position=1)
    album_public = Album.objects.create(owner=alice, title="Shared", visibility=Album.Visibility.PUBLIC)
    job = submit_generation(alice, {"prompt": "a blue square", "steps": 2})
    picture = base64.b64encode(png_bytes()).decode("ascii")
    job_with_source = submit_generation(alice, {"prompt": "a blue square", "steps": 2, "init_image": picture,
                                                "mask": picture})
    ids = {"private": private.pk, "public": public.pk, "hidden": hidden.pk, "album_private": album_private.pk,
           "album_public": album_public.pk, "job": job.pk, "job_with_source": job_with_source.pk}
    ids |= {f"lora_{state}": lora.pk for state, lora in make_loras(tiny_model, alice, staff).items()}
    ids["training"] = submit_training(alice, {"name": "trained", "trigger": "t", "album": album_private.pk}).pk
    return {"ids": ids, "people": {"owner": alice, "other": bob, "anonymous": None, "staff": staff}}


def make_loras(model, owner, staff) -> dict:
    """A private, a public and a hidden LoRA of `owner`'s for the tiny model."""
    from safetensors.torch import save

    from gallery import loras
    from generation.diffusion.lora import model_skeleton
    from tests.generation.diffusion.tiny import build_tiny_lora_layers, tiny_lora_state_dict

    data = save(tiny_lora_state_dict(build_tiny_lora_layers(model_skeleton(model.source))))
    made = {state: loras.upload_lora(owner, name=f"{state}-lora", data=data, base_model=model,
                                     visibility="private" if state == "private" else "public")
            for state in ("private", "public", "hidden")}
    loras.set_hidden(made["hidden"], True, staff, "test")
    return made


def fill(value, ids):
    """Put the world's ids into a path or body: "{public}" alone is the id itself."""
    if isinstance(value, str):
        return ids[value[1:-1]] if value.startswith("{") and value.endswith("}") else value.format(**ids)
    if isinstance(value, list):
        return [fill(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, ids) for key, item in value.items()}
    return value


def status_as(actor, world, method, path, body) -> int:
    """One request as `actor`, rolled back afterwards so every actor meets the same world."""
    client = client_for(world["people"][actor])
    with transaction.atomic():
        if body is None:
            response = getattr(client, method)(fill(path, world["ids"]))
        else:
            response = getattr(client, method)(fill(path, world["ids"]), fill(body, world["ids"]), format="json")
        transaction.set_rollback(True)
    return response.status_code


@pytest.mark.parametrize("method, path, body, expected", MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
@override_settings(LDM_A1111_TIMEOUT_SECONDS=0)
def test_the_permission_matrix(world, method, path, body, expected):
    got = tuple(status_as(actor, world, method, path, body) for actor in ACTORS)
    assert got == expected, f"{method.upper()} {path} as {ACTORS}: got {got}, expected {expected}"
