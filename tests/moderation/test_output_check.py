"""The output check: each finished image is checked before it is stored; one the check flags,
or fails on, is stored hidden and private and waits for staff (fail closed)."""

import pytest
import torch
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from PIL import Image as PILImage

from gallery import moderation, services
from generation import outputs
from generation.admission import Refusal
from gallery.models import Image
from gallery.moderation_models import AuditEntry, OutputReview
from generation.diffusion.request import validate_request
from generation.models import Generation
from generation.services import submit_generation
from ldmsite.config import load_config
from tests.generation.conftest import run_queue

HERE = "tests.moderation.test_output_check"


def flag_everything(picture, metadata):
    return "looks like a test"


def pass_everything(picture, metadata):
    return False


def broken_check(picture, metadata):
    raise RuntimeError("the checker's GPU fell over")


def store(owner, model, index=0):
    request = validate_request({"prompt": "a small blue square", "seed": 5, "width": 64, "height": 64},
                               model.limits())
    job = Generation.objects.create(owner=owner, model=model, params=request.to_dict(), status="running")
    metadata = {**request.to_dict(), "seed": request.seed}
    return outputs.store_checked_image(job, index, PILImage.new("RGB", (64, 64), (0, 0, 200)), metadata,
                                          "a small blue square\nSteps: 25", None)


@pytest.mark.parametrize("value, expected", [
    ("none", "none"), ("", "none"), ("tests.moderation.test_output_check.flag_everything", f"{HERE}.flag_everything"),
    ("safety-checker:/models/checker", "safety-checker:/models/checker"),
])
def test_the_output_check_setting_accepts_none_a_safety_checker_directory_or_a_callable(tmp_path, value, expected):
    assert load_config({"LDM_DATA_DIR": str(tmp_path), "LDM_OUTPUT_CHECK": value})["LDM_OUTPUT_CHECK"] == expected


@pytest.mark.parametrize("value", ["safety-checker:", "not a path", "nodots"])
def test_a_bad_output_check_setting_names_the_variable(tmp_path, value):
    with pytest.raises(ImproperlyConfigured, match="LDM_OUTPUT_CHECK"):
        load_config({"LDM_DATA_DIR": str(tmp_path), "LDM_OUTPUT_CHECK": value})


def test_with_no_check_images_are_stored_as_before(people, model, settings):
    settings.LDM_OUTPUT_CHECK = "none"
    image = store(people["owner"], model)
    assert not image.hidden and image.visibility == "private"
    assert not OutputReview.objects.exists()
    services.set_image_visibility(image, "public")
    assert Image.objects.public().filter(pk=image.pk).exists()


def test_a_passing_check_changes_nothing(people, model, settings):
    settings.LDM_OUTPUT_CHECK = f"{HERE}.pass_everything"
    image = store(people["owner"], model)
    assert not image.hidden and not OutputReview.objects.exists()


def test_a_flagged_image_stays_private_and_cannot_be_published_until_staff_release_it(
        people, model, settings, owner_client, staff_client, other_client):
    settings.LDM_OUTPUT_CHECK = f"{HERE}.flag_everything"
    image = store(people["owner"], model)
    image.refresh_from_db()
    assert image.hidden and image.visibility == "private"
    review = OutputReview.objects.get(image=image)
    assert (review.outcome, review.status, review.detail) == ("flagged", "pending", "looks like a test")

    owner_client.post(reverse("gallery:visibility", args=[image.pk]), {"visibility": "public"})
    image.refresh_from_db()
    assert image.visibility == "private"
    with pytest.raises(Refusal) as refused:
        services.set_image_visibility(image, "unlisted")
    assert refused.value.status == 403 and "waiting for a staff review" in refused.value.errors["visibility"]
    album = services.create_album(people["owner"], "All of them")
    services.add_to_album(album, [image])
    services.publish_album(album, "public")
    image.refresh_from_db()
    assert image.visibility == "private", "publishing an album leaves a held image private"
    assert "Held for review" in owner_client.get(reverse("gallery:image", args=[image.pk])).content.decode()

    held = staff_client.get(reverse("moderation:queue") + "?tab=held")
    assert [item.image_id for item in held.context["page"]] == [image.pk]
    staff_client.post(reverse("moderation:clear", args=[image.pk]))
    image.refresh_from_db()
    assert not image.hidden
    services.set_image_visibility(image, "public")
    assert image.pk in [i.pk for i in other_client.get(reverse("gallery:explore")).context["images"]]
    assert list(AuditEntry.objects.order_by("id").values_list("action", "via")) == [
        ("image.output_flagged", "system"), ("image.clear_review", "page")]


def test_a_check_that_raises_holds_the_image_fail_closed(people, model, settings):
    settings.LDM_OUTPUT_CHECK = f"{HERE}.broken_check"
    image = store(people["owner"], model)
    image.refresh_from_db()
    review = OutputReview.objects.get(image=image)
    assert image.hidden and review.outcome == "error" and "GPU fell over" in review.detail
    with pytest.raises(Refusal):
        services.set_image_visibility(image, "public")


def test_a_check_that_cannot_even_be_imported_holds_the_image(people, model, settings):
    settings.LDM_OUTPUT_CHECK = "tests.moderation.no_such_module.check"
    image = store(people["owner"], model)
    assert OutputReview.objects.get(image=image).outcome == "error"


def test_hiding_a_held_image_settles_its_review(people, model, settings):
    settings.LDM_OUTPUT_CHECK = f"{HERE}.flag_everything"
    image = store(people["owner"], model)
    moderation.hide_image(image, people["staff"], "Confirmed: not allowed")
    review = OutputReview.objects.get(image=image)
    assert review.status == "actioned" and review.resolved_by == people["staff"]


@pytest.mark.django_db(transaction=True)
def test_a_worker_holds_the_images_of_a_job_whose_check_fails(tiny_model, alice, broker, worker, settings):
    settings.LDM_OUTPUT_CHECK = f"{HERE}.broken_check"
    job = submit_generation(alice, {"prompt": "a red circle", "steps": 2, "seed": 3, "num_images": 2})
    run_queue(broker, worker)
    job.refresh_from_db()
    assert job.status == Generation.Status.SUCCEEDED, job.error_detail
    images = list(Image.objects.filter(generation=job))
    assert len(images) == 2
    assert all(image.hidden and image.visibility == "private" for image in images)
    assert OutputReview.objects.filter(image__in=images, outcome="error", status="pending").count() == 2


# --- Stable Diffusion's safety checker, from a local directory ----------------------------------------

def tiny_safety_checker(directory, flag: bool):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPVisionConfig

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=1,
                              image_size=32, patch_size=8, projection_dim=16)
    config = CLIPConfig(vision_config=vision.to_dict(), projection_dim=16)
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():  # cosine similarity is at most 1: a threshold of -2 always fires, 2 never does
        checker.concept_embeds_weights.fill_(-2.0 if flag else 2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    checker.save_pretrained(directory / "safety_checker")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        directory / "feature_extractor")
    return directory


@pytest.mark.parametrize("flag", [True, False])
def test_the_stable_diffusion_safety_checker_is_loaded_from_a_local_directory(people, model, settings, tmp_path,
                                                                                flag):
    directory = tiny_safety_checker(tmp_path / "checker", flag)
    settings.LDM_OUTPUT_CHECK = f"safety-checker:{directory}"
    image = store(people["owner"], model)
    image.refresh_from_db()
    assert image.hidden is flag
    assert OutputReview.objects.filter(image=image, outcome="flagged").exists() is flag
