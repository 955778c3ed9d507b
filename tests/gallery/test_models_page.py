"""Models & LoRAs: the enabled models with their defaults and a link to generate with each, the
LoRAs a person may see, one search over both; /loras/ still works."""

from django.test import Client
from django.urls import reverse

from gallery.models import Lora
from generation.models import DiffusionModel


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_models_and_loras_lists_enabled_models_and_the_loras_you_may_see_with_one_search(people, model):
    DiffusionModel.objects.exclude(pk=model.pk).delete()  # the built-in model, registered by migrate
    model.description, model.is_default = "Coloured shapes on plain backgrounds", True
    model.save()
    DiffusionModel.objects.create(name="Retired", slug="retired", source="/nonexistent", enabled=False)
    other_model = DiffusionModel.objects.create(name="Photo", slug="photo", source="/nonexistent",
                                                description="photographs")
    make = Lora.objects.create
    make(owner=people["owner"], name="mine-private", base_model=model, file="a", file_hash="1" * 64)
    make(owner=people["other"], name="theirs-public", base_model=model, file="b", file_hash="2" * 64,
         visibility="public", description="bold shapes")
    make(owner=people["other"], name="theirs-private", base_model=model, file="c", file_hash="3" * 64)
    client = signed_in(people["owner"])
    response = client.get(reverse("gallery:models"))
    assert response.status_code == 200
    page = response.content.decode()
    assert [m.slug for m in response.context["model_list"]] == ["shapes", "photo"]
    assert "Coloured shapes on plain backgrounds" in page and "Stable Diffusion 1.x" in page and "Retired" not in page
    assert f'{reverse("generation:generate")}?model=shapes' in page and "Generate with Shapes" in page
    assert "mine-private" in page and "theirs-public" in page and "theirs-private" not in page
    assert f'href="{reverse("gallery:models")}"' in page and "Models &amp; LoRAs" in page  # the nav link
    found = client.get(reverse("gallery:models"), {"q": "shapes"})
    assert [m.slug for m in found.context["model_list"]] == ["shapes"]
    assert [lora.name for lora in found.context["page"]] == ["theirs-public"]
    by_model = client.get(reverse("gallery:models"), {"model": "photo"})
    assert [m.slug for m in by_model.context["model_list"]] == [other_model.slug] and not by_model.context["page"]
    anonymous = Client().get(reverse("gallery:models")).content.decode()
    assert "theirs-public" in anonymous and "mine-private" not in anonymous and "Sign in to generate" in anonymous
    assert client.get(reverse("gallery:loras")).status_code == 200


def test_generate_with_a_model_or_a_lora_starts_the_form_there(people, model):
    DiffusionModel.objects.exclude(pk=model.pk).delete()
    DiffusionModel.objects.create(name="Photo", slug="photo", source="/nonexistent", is_default=True)
    client = signed_in(people["owner"])
    form = client.get(reverse("generation:generate"), {"model": "shapes", "lora": "oscar/style"}).context["form"]
    assert form.initial["model"] == "shapes" and form.initial["loras"] == "oscar/style:1"
    assert client.get(reverse("generation:generate"), {"model": "nope"}).context["form"].initial["model"] == "photo"
