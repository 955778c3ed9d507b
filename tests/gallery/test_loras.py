"""LoRAs as a resource: upload in kohya and PEFT keys checked against the base model, download in
kohya format, who may see, download and use one, the LoRAs page and its search, staff hiding,
and a job with <lora:name:1> that runs on the worker and records its LoRA in the PNG."""

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage
from rest_framework.test import APIClient

from gallery import loras as loras_service
from gallery.models import AuditEntry, Image, Lora
from generation.admission import usable_lora_names
from generation.diffusion.lora import lora_format, model_skeleton, read_lora, save_lora
from generation.models import DiffusionModel
from ldmsite.accounts.tokens import create_token
from tests.generation.conftest import (alice, bob, broker, run_queue, staff, tiny_model,  # noqa: F401
                                       tiny_pipeline_dir, worker)
from tests.generation.diffusion.tiny import build_tiny_lora_layers, tiny_lora_state_dict

JOB = {"steps": 2, "seed": 7, "width": 32, "height": 32, "sampler": "Euler"}


@pytest.fixture(scope="module")
def skeleton(tiny_pipeline_dir):  # noqa: F811
    return model_skeleton(tiny_pipeline_dir)


@pytest.fixture
def lora_bytes(skeleton, tmp_path):
    """A tiny LoRA file for the tiny model: ``lora_bytes(key_format, seed=1, widen=0)``."""
    def make(key_format="kohya", seed=1, widen=0):
        state = tiny_lora_state_dict(build_tiny_lora_layers(skeleton, seed=seed, widen=widen), key_format)
        path = save_lora(state, tmp_path / f"{key_format}-{seed}-{widen}.safetensors")
        return path.read_bytes()
    return make


def api_client(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(user, 'test', ['read', 'generate', 'write'])[1]}")
    return client


def upload(client, data, name="style", **fields):
    return client.post("/api/v1/loras/", {"file": SimpleUploadedFile(f"{name}.safetensors", data), "name": name,
                                          "base_model": "tiny", **fields}, format="multipart")


def downloaded(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("key_format", ["kohya", "diffusers"])
def test_a_lora_uploads_in_kohya_and_in_peft_keys_and_shows_its_hash_rank_and_how_to_use_it(
        tiny_model, alice, lora_bytes, key_format):
    data = lora_bytes(key_format)
    response = upload(api_client(alice), data, trigger_words="zq style", description="a test style")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == body["prompt_name"] == "style" and body["owner"] == "alice"
    assert body["base_model"] == "tiny" and body["key_format"] == key_format and body["rank"] == 2
    assert body["hash"] == read_lora(data).short_hash and body["visibility"] == "private"
    assert body["layer_count"] > 0 and response["Location"].endswith(body["url"])
    page = Client()
    page.force_login(alice)
    html = page.get(reverse("gallery:lora", args=[body["id"]])).content.decode()
    assert "&lt;lora:style:1&gt;" in html and "zq style" in html


def test_a_lora_for_another_base_model_is_a_400_naming_the_layer_and_nothing_is_stored(
        tiny_model, alice, lora_bytes):
    response = upload(api_client(alice), lora_bytes("kohya", widen=8))
    assert response.status_code == 400, response.json()
    message = response.json()["errors"]["file"]
    assert "does not fit Tiny" in message and "unet." in message and "to_" in message
    assert not Lora.objects.exists()


@pytest.mark.parametrize("data", [b"not a safetensors file at all", b"\x80\x04K\x01."])
def test_a_file_that_is_not_a_lora_is_a_400_naming_the_file_never_a_500(tiny_model, alice, data):
    response = upload(api_client(alice), data)
    assert response.status_code == 400 and "file" in response.json()["errors"]
    assert not Lora.objects.exists()


def test_a_second_lora_with_the_same_name_or_a_bad_name_is_refused_naming_the_name(tiny_model, alice, lora_bytes):
    client = api_client(alice)
    assert upload(client, lora_bytes()).status_code == 201
    again = upload(client, lora_bytes(seed=2))
    assert again.status_code == 400 and "already have" in again.json()["errors"]["name"]
    bad = upload(client, lora_bytes(seed=2), name="a:b")
    assert bad.status_code == 400 and "name" in bad.json()["errors"]
    assert Lora.objects.count() == 1


def test_an_upload_over_the_size_cap_is_refused_before_it_is_read(tiny_model, alice, lora_bytes, monkeypatch):
    monkeypatch.setattr(loras_service, "MAX_LORA_UPLOAD_BYTES", 100)
    response = upload(api_client(alice), lora_bytes())
    assert response.status_code == 413 and "file" in response.json()["errors"]
    assert not Lora.objects.exists()


def test_the_download_is_kohya_format_as_an_attachment_with_the_same_layers(tiny_model, alice, lora_bytes):
    client = api_client(alice)
    body = upload(client, lora_bytes("diffusers")).json()
    response = client.get(body["file"])
    assert response.status_code == 200 and 'attachment; filename="style.safetensors"' in response["Content-Disposition"]
    kohya = read_lora(downloaded(response))
    assert kohya.format == "kohya" and lora_format(kohya.state_dict) == "kohya"
    assert sum(key.endswith(".lora_down.weight") for key in kohya.state_dict) == body["layer_count"]
    assert kohya.metadata["ss_output_name"] == "style"
    page = Client()
    page.force_login(alice)
    assert read_lora(downloaded(page.get(reverse("gallery:lora_file", args=[body["id"]])))).format == "kohya"


@pytest.mark.parametrize("visibility", ["private", "unlisted", "public", "hidden"])
def test_only_shared_unhidden_loras_are_seen_downloaded_and_used_by_others(
        tiny_model, alice, bob, staff, lora_bytes, visibility):
    lora = loras_service.upload_lora(alice, name="mine", data=lora_bytes(), base_model=tiny_model,
                                     visibility="public" if visibility == "hidden" else visibility)
    if visibility == "hidden":
        loras_service.set_hidden(lora, True, staff, "test")
    shared = visibility in ("unlisted", "public")
    bob_api, anonymous = api_client(bob), APIClient()
    expected = 200 if shared else 404
    assert bob_api.get(f"/api/v1/loras/{lora.pk}/").status_code == expected
    assert bob_api.get(f"/api/v1/loras/{lora.pk}/file/").status_code == expected
    assert Client().get(reverse("gallery:lora", args=[lora.pk])).status_code == expected
    assert Client().get(reverse("gallery:lora_file", args=[lora.pk])).status_code == expected
    assert anonymous.get(f"/api/v1/loras/{lora.pk}/").status_code in (401, 403)
    # Using it: bob names it alice/mine; never by alice's bare name.
    assert ("alice/mine" in usable_lora_names(bob, tiny_model)) is shared
    assert "mine" not in usable_lora_names(bob, tiny_model)
    assert usable_lora_names(bob, tiny_model, ["mine", "alice/mine"]) == ({"alice/mine"} if shared else set())
    job = bob_api.post("/api/v1/generations/", {**JOB, "prompt": "a red circle <lora:alice/mine:1>"}, format="json")
    if shared:
        assert job.status_code == 202, job.json()
    else:
        assert job.status_code == 400 and "alice/mine" in job.json()["errors"]["loras"]
    # Nobody but alice may change it; alice and staff still see it.
    assert bob_api.patch(f"/api/v1/loras/{lora.pk}/", {"visibility": "public"}, format="json").status_code in (403, 404)
    assert bob_api.delete(f"/api/v1/loras/{lora.pk}/").status_code in (403, 404)
    assert api_client(staff).get(f"/api/v1/loras/{lora.pk}/file/").status_code == 200
    assert api_client(alice).get(f"/api/v1/loras/{lora.pk}/").json()["prompt_name"] == "mine"
    assert "mine" in usable_lora_names(alice, tiny_model)


def test_a_lora_named_with_another_base_model_is_refused_naming_that_model(tiny_model, alice, lora_bytes):
    loras_service.upload_lora(alice, name="mine", data=lora_bytes(), base_model=tiny_model)
    other = DiffusionModel.objects.create(name="Other", slug="other", source=tiny_model.source, default_width=32,
                                          default_height=32, max_width=64, max_height=64, default_sampler="Euler")
    response = api_client(alice).post("/api/v1/generations/", {**JOB, "model": "other", "prompt": "x <lora:mine:1>"},
                                      format="json")
    assert response.status_code == 400 and "made for model 'tiny'" in response.json()["errors"]["loras"]
    unknown = api_client(alice).post("/api/v1/generations/", {**JOB, "prompt": "x", "loras": [{"name": "nope"}]},
                                     format="json")
    assert unknown.status_code == 400 and "nope" in unknown.json()["errors"]["loras"]
    assert other.loras.count() == 0


def test_the_owner_renames_shares_and_deletes_a_lora_and_its_file_goes(tiny_model, alice, lora_bytes,
                                                                         django_capture_on_commit_callbacks):
    client = api_client(alice)
    body = upload(client, lora_bytes()).json()
    changed = client.patch(body["url"], {"visibility": "public", "name": "renamed"}, format="json")
    assert changed.status_code == 200 and changed.json()["visibility"] == "public"
    assert changed.json()["prompt_name"] == "renamed"
    lora = Lora.objects.get()
    storage, name = lora.file.storage, lora.file.name
    assert storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(body["url"]).status_code == 204
    assert not Lora.objects.exists() and not storage.exists(name)


def test_the_loras_page_lists_mine_and_public_ones_and_searches_names_descriptions_and_trigger_words(
        tiny_model, alice, bob, lora_bytes):
    make = loras_service.upload_lora
    make(alice, name="watercolor", data=lora_bytes(seed=1), base_model=tiny_model, description="soft paint")
    make(bob, name="pixelart", data=lora_bytes(seed=2), base_model=tiny_model, trigger_words="8bit",
         visibility="public")
    make(bob, name="secret", data=lora_bytes(seed=3), base_model=tiny_model)
    make(bob, name="shared-link", data=lora_bytes(seed=4), base_model=tiny_model, visibility="unlisted")
    page = Client()
    page.force_login(alice)
    html = page.get(reverse("gallery:loras")).content.decode()
    assert "watercolor" in html and "pixelart" in html
    assert "secret" not in html and "shared-link" not in html  # unlisted: reachable by link, not listed
    assert "pixelart" in page.get(reverse("gallery:loras"), {"q": "8bit"}).content.decode()
    found = page.get(reverse("gallery:loras"), {"q": "paint"}).content.decode()
    assert "watercolor" in found and "pixelart" not in found
    anonymous = Client().get(reverse("gallery:loras")).content.decode()
    assert "pixelart" in anonymous and "watercolor" not in anonymous and "Upload a LoRA" not in anonymous
    api = api_client(alice).get("/api/v1/loras/", {"q": "8bit"}).json()["results"]
    assert [(item["name"], item["prompt_name"]) for item in api] == [("pixelart", "bob/pixelart")]
    assert 'href="/models/"' in html and "Models &amp; LoRAs" in html  # the nav link: models and LoRAs together


def test_the_upload_form_stores_a_lora_and_a_bad_one_shows_the_layer_as_a_message(tiny_model, alice, lora_bytes):
    page = Client()
    page.force_login(alice)
    response = page.post(reverse("gallery:upload_lora"), {
        "file": SimpleUploadedFile("s.safetensors", lora_bytes("diffusers")), "name": "fromform",
        "base_model": "tiny", "visibility": "public"})
    lora = Lora.objects.get()
    assert response.status_code == 302 and response["Location"] == lora.get_absolute_url()
    assert lora.visibility == "public" and lora.key_format == "diffusers"
    bad = page.post(reverse("gallery:upload_lora"), {
        "file": SimpleUploadedFile("s.safetensors", lora_bytes(widen=8)), "name": "wide", "base_model": "tiny"},
        follow=True)
    assert "does not fit Tiny" in bad.content.decode() and Lora.objects.count() == 1


def test_staff_hiding_a_lora_is_in_the_audit_log_and_the_admin_lists_loras(tiny_model, alice, staff, lora_bytes):
    lora = loras_service.upload_lora(alice, name="mine", data=lora_bytes(), base_model=tiny_model,
                                     visibility="public")
    admin = Client()
    admin.force_login(staff)
    staff.is_superuser = True
    staff.save()
    assert "mine" in admin.get("/admin/gallery/lora/").content.decode()
    response = admin.post("/admin/gallery/lora/", {"action": "hide_loras", "_selected_action": [lora.pk],
                                                   "reason": "spam"})
    assert response.status_code == 302
    lora.refresh_from_db()
    assert lora.hidden and lora.hidden_reason == "spam"
    entry = AuditEntry.objects.get(target_type="lora")
    assert entry.action == "lora.hide" and entry.target_id == lora.pk and entry.reason == "spam"


def job_pixels(client, prompt):
    job = client.post("/api/v1/generations/", {**JOB, "prompt": prompt}, format="json")
    assert job.status_code == 202, job.json()
    return job.json()["url"]


def finished_png(client, url):
    done = client.get(url).json()
    assert done["status"] == "succeeded", done
    image = Image.objects.get(pk=done["images"][0]["id"])
    with image.file.open("rb") as handle:
        png = PILImage.open(io.BytesIO(handle.read()))
        png.load()
    return np.asarray(png.convert("RGB")).astype(int), png.text["parameters"]


@pytest.mark.django_db(transaction=True)
def test_a_lora_job_runs_on_the_worker_records_its_hash_and_the_download_reuploaded_gives_identical_pixels(
        tiny_model, alice, bob, lora_bytes, broker, worker):  # noqa: F811
    alice_api = api_client(alice)
    original = upload(alice_api, lora_bytes("diffusers"), name="orig", visibility="public").json()
    kohya = downloaded(alice_api.get(original["file"]))
    again = upload(api_client(bob), kohya, name="again").json()
    jobs = [(alice_api, job_pixels(alice_api, "a red circle <lora:orig:1>")),
            (api_client(bob), job_pixels(api_client(bob), "a red circle <lora:again:1>")),
            (api_client(bob), job_pixels(api_client(bob), "a red circle <lora:alice/orig:1>")),
            (alice_api, job_pixels(alice_api, "a red circle"))]
    run_queue(broker, worker)
    (first, text), (second, text_again), (third, text_shared), (plain, plain_text) = \
        [finished_png(client, url) for client, url in jobs]
    assert f'Lora hashes: "orig: {original["hash"]}"' in text
    assert f'Lora hashes: "again: {again["hash"]}"' in text_again
    assert f'Lora hashes: "alice/orig: {original["hash"]}"' in text_shared
    assert np.array_equal(first, second) and np.array_equal(first, third)  # same tensors, same pixels
    assert np.abs(first - plain).max() > 10 and "Lora hashes" not in plain_text


def test_the_generate_form_takes_loras_by_name_and_weight_and_refuses_an_unknown_one_by_name(
        tiny_model, alice, lora_bytes):  # noqa: F811
    assert upload(api_client(alice), lora_bytes("kohya"), name="mine").status_code == 201
    page = Client()
    page.force_login(alice)
    form = {"model": "tiny", "prompt": "a red circle", "width": "32", "height": "32", "steps": "2",
            "guidance_scale": "5", "sampler": "Euler", "num_images": "1"}
    refused = page.post(reverse("generation:generate"), {**form, "loras": "ghost:1"})
    assert refused.status_code == 400 and "Unknown LoRA: &#x27;ghost&#x27;" in refused.content.decode()
    assert 'value="ghost:1"' in refused.content.decode()  # kept in the field to correct
    assert not alice.generations.exists()
    accepted = page.post(reverse("generation:generate"), {**form, "loras": "mine:0.5"})
    assert accepted.status_code == 302
    assert alice.generations.get().params["loras"] == [["mine", 0.5]]
