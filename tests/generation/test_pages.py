"""The generate page, job pages, cancel permissions and the history page."""

import pytest
from django.urls import reverse

from gallery.models import Image
from generation.models import Generation
from generation.services import submit_generation


def form_data(**overrides):
    data = {"model": "tiny", "prompt": "a red circle", "negative_prompt": "", "width": "32", "height": "32",
            "steps": "3", "guidance_scale": "5", "sampler": "Euler", "seed": "", "num_images": "1", "eta": "0"}
    data.update(overrides)
    return data


def test_the_generate_page_needs_a_signed_in_person(client, tiny_model):
    response = client.get(reverse("generation:generate"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_generate_page_offers_each_model_with_its_limits(client, tiny_model, alice):
    client.force_login(alice)
    page = client.get(reverse("generation:generate")).content.decode()
    assert 'data-max-width="64"' in page and "Tiny — up to 64×64" in page
    assert 'name="prompt"' in page and "CLIP guidance" in page


def test_a_plain_form_post_queues_a_job_and_lands_on_its_page(client, tiny_model, alice):
    client.force_login(alice)
    response = client.post(reverse("generation:generate"), form_data())
    job = Generation.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    page = client.get(job.get_absolute_url()).content.decode()
    assert "Queued" in page and "a red circle" in page and "Queue position" in page


def test_form_errors_are_shown_next_to_their_fields(client, tiny_model, alice):
    client.force_login(alice)
    response = client.post(reverse("generation:generate"), form_data(width="70", steps="900", prompt=""))
    assert response.status_code == 400
    page = response.content.decode()
    assert "Must be a multiple of 8 from 32 to 64 (got 70)" in page
    for field in ("width", "steps", "prompt"):
        assert f'data-errors-for="{field}"><li>' in page
    assert not Generation.objects.exists()


def test_the_page_script_gets_json_with_the_job_or_field_errors(client, tiny_model, alice):
    client.force_login(alice)
    ok = client.post(reverse("generation:generate"), form_data(), HTTP_ACCEPT="application/json")
    assert ok.status_code == 202
    assert ok.json()["job"]["status"] == "queued"
    bad = client.post(reverse("generation:generate"), form_data(sampler="Nope"), HTTP_ACCEPT="application/json")
    assert bad.status_code == 400
    assert "sampler" in bad.json()["errors"]


def test_clip_guidance_fields_are_sent_only_when_switched_on(client, tiny_model, alice):
    client.force_login(alice)
    client.post(reverse("generation:generate"), form_data(clip_guidance_scale="50"))
    client.post(reverse("generation:generate"), form_data(clip_guidance="on", clip_guidance_scale="50",
                                                         clip_guidance_every="2", clip_cutouts="2"))
    off, on = Generation.objects.order_by("pk")
    assert off.params["clip_guidance_scale"] == 0
    assert (on.params["clip_guidance_scale"], on.params["clip_guidance_every"]) == (50, 2)


def test_only_the_owner_or_staff_can_see_or_cancel_a_job(client, tiny_model, alice, bob, staff):
    job = submit_generation(alice, {"prompt": "a red circle"})
    client.force_login(bob)
    assert client.get(job.get_absolute_url()).status_code == 404
    assert client.post(reverse("generation:cancel", args=[job.pk])).status_code == 404
    job.refresh_from_db()
    assert job.status == "queued"
    client.force_login(staff)
    assert client.post(reverse("generation:cancel", args=[job.pk])).status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_the_owner_cancels_a_queued_job_from_its_page(client, tiny_model, alice):
    job = submit_generation(alice, {"prompt": "a red circle"})
    client.force_login(alice)
    cancel_url = reverse("generation:cancel", args=[job.pk])
    assert cancel_url in client.get(job.get_absolute_url()).content.decode(), "a queued job offers Cancel"
    client.post(cancel_url)
    job.refresh_from_db()
    assert job.status == "cancelled"
    page = client.get(job.get_absolute_url()).content.decode()
    assert 'data-testid="job-status">Cancelled<' in page
    assert cancel_url not in page, "a cancelled job offers no Cancel button"


@pytest.mark.django_db(transaction=True)
def test_my_images_lists_my_outputs_newest_first_and_only_mine(client, tiny_model, alice, bob, broker, worker):
    from tests.generation.conftest import run_queue

    first = submit_generation(alice, {"prompt": "first picture", "steps": 2, "width": 32, "height": 32})
    second = submit_generation(alice, {"prompt": "second picture", "steps": 2, "width": 32, "height": 32})
    submit_generation(bob, {"prompt": "bobs picture", "steps": 2, "width": 32, "height": 32})
    run_queue(broker, worker)
    client.force_login(alice)
    page = client.get(reverse("gallery:history")).content.decode()
    image, second_image = Image.objects.get(generation=first), Image.objects.get(generation=second)
    first_tile, second_tile = f'data-image="{image.pk}"', f'data-image="{second_image.pk}"'
    assert first_tile in page and second_tile in page, "both of my images are listed"
    assert page.index(second_tile) < page.index(first_tile), "newest first"
    assert page.index("second picture") < page.index("first picture")
    assert "bobs picture" not in page
    assert client.get(image.file_url()).status_code == 200
    client.force_login(bob)
    assert client.get(image.file_url()).status_code == 404, "a private image is nobody else's"


def test_autoguidance_is_refused_by_field_for_a_model_without_a_guide_unet(client, tiny_model, alice):
    client.force_login(alice)
    response = client.post(reverse("generation:generate"), form_data(autoguidance_scale="1"),
                           HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    assert "no guide UNet" in response.json()["errors"]["autoguidance_scale"]
    assert not Generation.objects.exists()


def test_the_form_starts_at_a_guided_models_default_autoguidance(client, tiny_model, alice):
    tiny_model.has_guide_unet, tiny_model.default_autoguidance_scale = True, 1.0
    tiny_model.save()
    client.force_login(alice)
    page = client.get(reverse("generation:generate")).content.decode()
    assert 'data-guide="1" data-autoguidance="1.0"' in page
    assert 'name="autoguidance_scale" value="1.0"' in page


@pytest.mark.django_db(transaction=True)
def test_a_job_on_a_model_with_a_guide_unet_runs_with_its_default_autoguidance(tmp_path, tiny_pipeline_dir, alice,
                                                                               broker, worker):
    """Registry defaults -> validation -> worker's model cache (which loads guide_unet/) -> engine -> PNG."""
    import shutil

    from generation.models import DiffusionModel
    from tests.generation.conftest import run_queue

    path = tmp_path / "guided"
    shutil.copytree(tiny_pipeline_dir, path)
    shutil.copytree(path / "unet", path / "guide_unet")
    DiffusionModel.objects.all().delete()
    DiffusionModel.objects.create(
        name="Guided", slug="guided", source=str(path), family="sd1", has_guide_unet=True,
        default_autoguidance_scale=1.0, default_width=32, default_height=32, max_width=64, max_height=64,
        default_steps=2, default_sampler="Euler", default_guidance_scale=5.0, is_default=True)
    job = submit_generation(alice, {"prompt": "a red circle"})
    assert job.params["autoguidance_scale"] == 1.0
    run_queue(broker, worker)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error_detail
    assert "Autoguidance scale: 1" in job.images.get().parameters


def test_remixing_an_image_made_before_autoguidance_existed_starts_with_it_off(client, tiny_model, alice):
    """A job stored without the field ran without autoguidance, whatever the model's default is now."""
    from tests.api.conftest import make_image

    tiny_model.has_guide_unet, tiny_model.default_autoguidance_scale = True, 1.0
    tiny_model.save()
    client.force_login(alice)
    remixed = {}
    for label, params in (("stored before", {}), ("stored with 1.5", {"autoguidance_scale": 1.5})):
        job = Generation.objects.create(owner=alice, model=tiny_model, status="succeeded",
                                        params={"prompt": "a red circle", "guidance_scale": 2.0, "steps": 25,
                                                "sampler": "Euler", "seed": 3, **params})
        image = make_image(alice, generation=job, model=tiny_model)
        page = client.get(reverse("generation:generate") + f"?remix={image.pk}").content.decode()
        remixed[label] = page
    assert 'name="autoguidance_scale" value="0.0"' in remixed["stored before"]
    assert 'name="autoguidance_scale" value="1.5"' in remixed["stored with 1.5"]
