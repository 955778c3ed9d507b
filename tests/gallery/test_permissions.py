"""Who may do what with an image: owner / another person / anonymous / staff ×
private / unlisted / public / hidden × page, file, thumbnail, edit, delete, like, add to album.
An image you may not see is a 404 (nothing leaks that it exists), one you may see but not
change is a 403, and anonymous people are sent to log in; never a 500."""

import base64
import io

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage
from rest_framework.test import APIClient

from gallery.models import Album, Image
from generation.services import submit_generation
from tests.generation.conftest import tiny_pipeline_dir  # noqa: F401 - the tiny model a LoRA is made for

STATES = {
    "private": dict(visibility="private"),
    "unlisted": dict(visibility="unlisted"),
    "public": dict(visibility="public"),
    "hidden": dict(visibility="public", hidden=True),
}
# Who sees a state: the owner and staff always; others and anonymous only unlisted/public.
SEES = {
    ("owner", s): True for s in STATES} | {("staff", s): True for s in STATES} | {
    (who, s): s in ("unlisted", "public") for who in ("other", "anonymous") for s in STATES}


def client_for(who, people):
    client = Client()
    if who != "anonymous":
        client.force_login(people[who])
    return client


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("who", ["owner", "other", "anonymous", "staff"])
def test_viewing_the_page_file_and_thumbnail(people, make_image, who, state):
    image = make_image(people["owner"], **STATES[state])
    client = client_for(who, people)
    expected = 200 if SEES[(who, state)] else 404
    for url in (image.get_absolute_url(), image.file_url(), image.thumbnail_url()):
        assert client.get(url).status_code == expected, url
    if expected == 200:
        response = client.get(image.file_url())
        assert response["Content-Type"] == "image/png"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert client.get(image.thumbnail_url())["Content-Type"] == "image/webp"


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("who", ["owner", "other", "anonymous", "staff"])
def test_editing_and_deleting_is_for_the_owner_only(people, make_image, who, state):
    image = make_image(people["owner"], **STATES[state])
    client = client_for(who, people)
    visibility = client.post(reverse("gallery:visibility", args=[image.pk]), {"visibility": "unlisted"})
    delete = client.post(reverse("gallery:delete", args=[image.pk]))
    if who == "owner":
        assert visibility.status_code == 302 and delete.status_code == 302
        assert not Image.objects.filter(pk=image.pk).exists()
        return
    denial = 302 if who == "anonymous" else 403 if SEES[(who, state)] else 404  # anonymous: to the login page
    assert visibility.status_code == denial and delete.status_code == denial
    image.refresh_from_db()
    assert image.visibility == STATES[state]["visibility"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("who", ["owner", "other", "anonymous", "staff"])
def test_liking_needs_an_account_and_an_image_you_can_see(people, make_image, who, state):
    image = make_image(people["owner"], **STATES[state])
    response = client_for(who, people).post(reverse("gallery:like", args=[image.pk]))
    image.refresh_from_db()
    if who == "anonymous":
        assert response.status_code == 302 and image.like_count == 0
    elif SEES[(who, state)]:
        assert response.status_code == 302 and image.like_count == 1
    else:
        assert response.status_code == 404 and image.like_count == 0


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("who", ["owner", "other", "staff"])
def test_only_the_owner_can_put_an_image_in_their_album(people, make_image, who, state):
    image = make_image(people["owner"], **STATES[state])
    response = client_for(who, people).post(reverse("gallery:add_to_album"),
                                            {"images": [image.pk], "album": "new", "new_title": "Mine"})
    assert response.status_code == 302
    album = Album.objects.filter(title="Mine").first()
    if who == "owner":
        assert list(album.images.all()) == [image]
    else:
        assert album is None or not album.images.exists(), "nobody files someone else's image"


def test_a_hidden_image_is_marked_for_its_owner(people, make_image):
    image = make_image(people["owner"], visibility="public", hidden=True)
    image.hidden_reason = "spam"
    image.save()
    page = client_for("owner", people).get(image.get_absolute_url()).content.decode()
    assert "Hidden by moderators: spam" in page


def test_ids_that_do_not_exist_are_404_not_500(people):
    client = client_for("other", people)
    for name in ("image", "image_file", "image_thumbnail"):
        assert client.get(reverse(f"gallery:{name}", args=[999999])).status_code == 404
    assert client.post(reverse("gallery:like", args=[999999])).status_code == 404
    assert client.get(reverse("gallery:album", args=[999999])).status_code == 404


@pytest.mark.parametrize("change", ["made private", "hidden by moderators"])
@pytest.mark.parametrize("who", ["owner", "other", "anonymous", "staff"])
def test_a_public_album_shows_only_the_images_you_may_see_on_its_page_and_in_the_api(
        people, make_image, who, change):
    """Issue 24, failure 3: an image made private after it went into a public album stayed on the
    album's page (its id, prompt, size and likes), while the API left it out. Both follow one rule
    now (`Album.items_visible_to`), and so do the album's cover and image count."""
    from rest_framework.test import APIClient

    owner = people["owner"]
    shown = make_image(owner, prompt="a shared yellow star", visibility="public")
    secret = make_image(owner, prompt="a secret green moon", visibility="public")
    album = Album.objects.create(owner=owner, title="Sky", visibility="public")
    owner_client = client_for("owner", people)
    for image in (secret, shown):
        owner_client.post(reverse("gallery:add_to_album"), {"images": [image.pk], "album": album.pk})
    assert Album.objects.get(pk=album.pk).cover_id == secret.pk
    if change == "made private":
        owner_client.post(reverse("gallery:visibility", args=[secret.pk]), {"visibility": "private"})
    else:
        Image.objects.filter(pk=secret.pk).update(hidden=True)
    sees_secret = who == "owner" or who == "staff"

    page = client_for(who, people).get(album.get_absolute_url())
    assert page.status_code == 200
    text = page.content.decode()
    assert "a shared yellow star" in text and f'data-image="{shown.pk}"' in text
    assert ("a secret green moon" in text) is sees_secret
    assert (f'data-image="{secret.pk}"' in text) is sees_secret
    assert (secret.thumbnail_url() in text) is sees_secret

    api = APIClient()
    if who != "anonymous":
        api.force_authenticate(people[who])
        body = api.get(f"/api/v1/albums/{album.pk}/").json()
        assert [image["id"] for image in body["images"]] == ([secret.pk, shown.pk] if sees_secret else [shown.pk])
        assert body["image_count"] == (2 if sees_secret else 1)
        assert body["cover"] == (secret.pk if sees_secret else None)

    profile = client_for(who, people).get(reverse("gallery:profile", args=[owner.username])).content.decode()
    assert (secret.thumbnail_url() in profile) is sees_secret


@pytest.mark.parametrize("who", ["owner", "other", "anonymous", "staff"])
def test_the_picture_an_image_was_made_from_is_as_private_as_its_job(people, make_image, model, who):
    """Image to image: the job's stored source picture and mask are its owner's and staff's (others
    get a 404, anonymous people the login page); the gallery image it came from is linked on the
    result's page only for those who may see that image."""
    owner = people["owner"]
    origin = make_image(owner, visibility="private")
    buffer = io.BytesIO()
    PILImage.new("L", (64, 64), 255).save(buffer, format="PNG")
    job = submit_generation(owner, {"prompt": "a red circle", "source_image": origin.pk,
                                    "mask": base64.b64encode(buffer.getvalue()).decode()}, model=model)
    result = make_image(owner, visibility="public")
    Image.objects.filter(pk=result.pk).update(generation=job)
    client = client_for(who, people)
    private = who in ("owner", "staff")
    for kind in ("init", "mask"):
        response = client.get(reverse("generation:source", args=[job.pk, kind]))
        assert response.status_code == (200 if private else 302 if who == "anonymous" else 404), kind
    source = client.get(result.get_absolute_url()).context["source"]
    if private:
        assert source["image"] == origin and source["file_url"] == job.source_url("init")
        assert source["mask_url"] == job.source_url("mask")
    else:
        assert source is None, "neither the private origin nor the stored picture shows"
    Image.objects.filter(pk=origin.pk).update(visibility="public")
    source = client.get(result.get_absolute_url()).context["source"]
    assert source["image"] == origin and source["page_url"] == origin.get_absolute_url()
    assert (source["init_url"] is not None) == private and (source["mask_url"] is not None) == private


# --- LoRAs: the same states and people as images -------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lora_data(tiny_pipeline_dir):  # noqa: F811
    from safetensors.torch import save

    from generation.diffusion.lora import model_skeleton
    from tests.generation.diffusion.tiny import build_tiny_lora_layers, tiny_lora_state_dict

    return save(tiny_lora_state_dict(build_tiny_lora_layers(model_skeleton(tiny_pipeline_dir))))


@pytest.fixture
def make_lora(model, tiny_lora_data):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from gallery.models import Lora, lora_file_name
    from generation.diffusion.lora import read_lora

    data = tiny_lora_data

    def make(owner, visibility="private", hidden=False):
        stored = default_storage.save(lora_file_name(), ContentFile(data))
        return Lora.objects.create(owner=owner, name=f"l{Lora.objects.count()}", base_model=model, file=stored,
                                   file_hash=read_lora(data).hash, file_size=len(data), visibility=visibility,
                                   hidden=hidden)
    return make


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("who", ["owner", "other", "anonymous", "staff"])
def test_a_loras_page_and_download_are_for_those_who_may_see_it(people, make_lora, who, state):
    lora = make_lora(people["owner"], **STATES[state])
    client = client_for(who, people)
    expected = 200 if SEES[(who, state)] else 404
    for url in (lora.get_absolute_url(), reverse("gallery:lora_file", args=[lora.pk])):
        assert client.get(url).status_code == expected, url
    listed = f'href="{lora.get_absolute_url()}"' in client.get(reverse("gallery:loras")).content.decode()
    assert listed is (who == "owner" or state == "public")  # the listing: your own and public ones


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("who", ["owner", "other", "anonymous", "staff"])
def test_editing_and_deleting_a_lora_is_for_its_owner_only(people, make_lora, who, state):
    from gallery.models import Lora

    lora = make_lora(people["owner"], **STATES[state])
    client = client_for(who, people)
    edit = client.post(reverse("gallery:edit_lora", args=[lora.pk]), {"description": "changed"})
    delete = client.post(reverse("gallery:edit_lora", args=[lora.pk]), {"action": "delete"})
    if who == "owner":
        assert edit.status_code == 302 and delete.status_code == 302 and not Lora.objects.filter(pk=lora.pk).exists()
        return
    if who == "anonymous":
        assert edit.status_code == delete.status_code == 302 and "/login" in edit["Location"]
    else:
        assert edit.status_code == delete.status_code == (403 if SEES[(who, state)] else 404)
    lora.refresh_from_db()
    assert lora.description == ""
