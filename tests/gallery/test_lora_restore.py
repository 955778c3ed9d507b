"""Remix and PNG import bring an image's LoRAs back into the generate page's LoRA field, named as
the person remixing may use them, and say so when one cannot be used."""

import html
import io
import itertools

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from gallery.models import Lora
from generation.diffusion import format_parameters
from generation.diffusion.request import validate_request
from generation.models import Generation
from generation.outputs import store_generated_image

HASH = "ab12cd34ef56" + "0" * 52
OTHER_HASH = "99" * 32
_seeds = itertools.count(500)


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def style(people, model):
    """Olive's LoRA "style", shared (public) unless a test makes it private."""
    return Lora.objects.create(owner=people["owner"], name="style", base_model=model, file="loras/style.safetensors",
                               file_hash=HASH, visibility="public")


def made_with_lora(owner, model, loras, visibility="public"):
    """An image of a job that applied ``loras``, its PNG parameters written as the worker writes them."""
    request = validate_request({"prompt": "a red circle", "seed": next(_seeds), "width": 64, "height": 64, "steps": 4,
                                "loras": [{"name": name, "weight": weight} for name, weight in loras]},
                               model.limits())
    job = Generation.objects.create(owner=owner, model=model, params=request.to_dict(), status="succeeded")
    metadata = {**request.to_dict(), "seed": request.seed}
    parameters = format_parameters(metadata, extra={"Lora hashes": ", ".join(f"{n}: {HASH[:12]}" for n, _ in loras)})
    image = store_generated_image(job, 0, PILImage.new("RGB", (64, 64)), metadata, parameters, None)
    image.visibility = visibility
    image.save()
    return image


def lora_field(page: str) -> str:
    start = page.index('name="loras"')
    tag = page[page.rindex("<input", 0, start):page.index(">", start)]
    return html.unescape(tag.partition('value="')[2].partition('"')[0]) if 'value="' in tag else ""


def test_remix_fills_the_lora_field_with_the_name_each_person_uses_for_that_lora(people, model, style):
    image = made_with_lora(people["owner"], model, [("style", 0.8)])
    assert '<lora:style:0.8>' in image.parameters and "Lora hashes" in image.parameters
    url = reverse("generation:generate") + f"?remix={image.pk}"
    own = signed_in(people["owner"]).get(url).content.decode()
    assert lora_field(own) == "style:0.8"
    theirs = signed_in(people["other"]).get(url).content.decode()
    assert lora_field(theirs) == "olive/style:0.8"
    assert "&lt;lora:" not in theirs.partition('name="prompt"')[2].partition("</textarea>")[0]


def test_remix_of_an_image_whose_lora_is_now_private_says_so_instead_of_dropping_it_silently(people, model, style):
    image = made_with_lora(people["owner"], model, [("style", 0.8)])
    style.visibility = "private"
    style.save()
    response = signed_in(people["other"]).get(reverse("generation:generate") + f"?remix={image.pk}")
    assert lora_field(response.content.decode()) == ""
    notes = [str(message) for message in get_messages(response.wsgi_request)]
    assert any("LoRA 'style' is not one you can use" in note for note in notes), notes


def png_with(parameters: str) -> io.BytesIO:
    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    buffer.seek(0)
    buffer.name = "a1111.png"
    return buffer


def imported(user, parameters: str) -> dict:
    response = signed_in(user).post(reverse("generation:import_png"), {"file": png_with(parameters)})
    assert response.status_code == 200, response.content
    return response.json()


def test_importing_an_a1111_png_moves_its_lora_tags_into_the_lora_field_found_by_hash(people, model, style):
    # Oscar has a LoRA of the same name but another file: the PNG's hash says it is not that one.
    Lora.objects.create(owner=people["other"], name="style", base_model=model, file="loras/o.safetensors",
                        file_hash=OTHER_HASH)
    body = imported(people["other"], "a cat <lora:style:0.5> in a hat\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
                                     f'Seed: 1, Size: 64x64, Lora hashes: "style: {HASH[:12]}"')
    assert body["fields"]["prompt"] == "a cat in a hat"
    assert body["fields"]["loras"] == "olive/style:0.5" and body["lora_problems"] == []


def test_importing_a_png_with_a_lora_nobody_here_shares_leaves_it_out_with_a_message(people, model):
    body = imported(people["other"], "a cat <lora:secret:1>\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, "
                                     "Size: 64x64")
    assert body["fields"]["prompt"] == "a cat" and body["fields"]["loras"] == ""
    assert body["lora_problems"] == ["LoRA 'secret' is not one you can use (private to its owner, hidden, or not on "
                                     "this site), so it was left out"]


def test_importing_a_png_without_loras_empties_the_lora_field(people):
    body = imported(people["owner"], "a dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64")
    assert body["fields"]["loras"] == "" and body["lora_problems"] == []
