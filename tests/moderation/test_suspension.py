"""Suspending a person: no sign-in, no tokens, no jobs, their public content hidden; and
unsuspending restores exactly what the suspension hid."""

import pytest
from django.test import Client
from django.urls import reverse

from gallery import moderation, services
from gallery.models import Image
from gallery.moderation_models import AuditEntry, Suspension
from generation.models import Generation
from generation.admission import Refusal
from generation.queue import claim_next_job
from generation.services import submit_generation
from ldmsite.accounts.tokens import create_token

PASSWORD = "violet-lantern-4821"
Status = Generation.Status


def can_sign_in(username: str) -> bool:
    """Through the login page, as a person would (django-axes needs the request)."""
    return Client().post(reverse("login"), {"username": username, "password": PASSWORD}).status_code == 302


def test_a_suspended_person_cannot_sign_in_and_their_open_session_ends(people, staff_client, owner_client):
    assert can_sign_in("olive"), "olive can sign in before the suspension"
    assert owner_client.get(reverse("gallery:history")).status_code == 200
    response = staff_client.post(reverse("moderation:suspend", args=["olive"]), {"reason": "Repeated spam"})
    assert response.status_code == 302
    people["owner"].refresh_from_db()
    assert not people["owner"].is_active
    assert owner_client.get(reverse("gallery:history")).status_code == 302, "the old session no longer works"
    assert not can_sign_in("olive")
    suspension = Suspension.objects.get()
    assert (suspension.user, suspension.suspended_by, suspension.reason) == (people["owner"], people["staff"],
                                                                             "Repeated spam")
    entry = AuditEntry.objects.get(action=AuditEntry.Action.SUSPEND)
    assert entry.subject == people["owner"] and entry.via == "page"


def test_a_suspended_persons_api_tokens_stop_working_and_work_again_after(people):
    _, raw = create_token(people["owner"], "script", ["read", "generate"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/me/").status_code == 200
    moderation.suspend(people["owner"], people["staff"], "Abuse")
    assert api.get("/api/v1/me/").status_code == 401
    moderation.unsuspend(people["owner"], people["staff"], "Appeal accepted")
    assert api.get("/api/v1/me/").status_code == 200


def test_suspension_cancels_queued_and_running_jobs_and_no_new_ones_are_taken(people, model, settings):
    settings.LDM_MAX_ACTIVE_JOBS = 10
    running = submit_generation(people["owner"], {"prompt": "a red circle", "steps": 3}, model=model)
    assert claim_next_job("w1").pk == running.pk
    queued = [submit_generation(people["owner"], {"prompt": "a blue square", "steps": 3}, model=model)
              for _ in range(2)]
    suspension = moderation.suspend(people["owner"], people["staff"], "Abuse")
    assert suspension.cancelled_jobs == 3
    for job in queued:
        job.refresh_from_db()
        assert job.status == Status.CANCELLED
    running.refresh_from_db()
    assert running.cancel_requested, "the running job stops at its next step"
    assert claim_next_job("w1") is None, "no worker takes a job of theirs"
    with pytest.raises(Refusal) as refused:
        submit_generation(people["owner"], {"prompt": "a green circle"}, model=model)
    assert refused.value.status == 403 and "suspended" in refused.value.errors["__all__"]
    assert Generation.objects.filter(owner=people["owner"]).count() == 3


def test_suspension_hides_public_content_and_unsuspending_restores_exactly_that(people, make_image, other_client):
    owner, staff = people["owner"], people["staff"]
    public = make_image(owner, prompt="public one", visibility="public")
    unlisted = make_image(owner, prompt="unlisted one", visibility="unlisted")
    private = make_image(owner, prompt="private one", visibility="private")
    hidden_before = make_image(owner, prompt="hidden before", visibility="public")
    hidden_during = make_image(owner, prompt="hidden during", visibility="public")
    moderation.hide_image(hidden_before, staff, "Spam")
    album = services.create_album(owner, "Shared", visibility="public")
    services.add_to_album(album, [public])

    moderation.suspend(owner, staff, "Abuse")
    assert not Image.objects.public().filter(owner=owner).exists()
    assert other_client.get(reverse("gallery:image", args=[unlisted.pk])).status_code == 404
    assert other_client.get(reverse("gallery:album", args=[album.pk])).status_code == 404
    assert other_client.get(reverse("gallery:profile", args=["olive"])).status_code == 404
    private.refresh_from_db()
    assert (private.visibility, private.hidden) == ("private", False), "nothing to hide: left as it was"
    moderation.hide_image(hidden_during, staff, "Also bad")  # a decision of its own: it stays

    moderation.unsuspend(owner, staff, "Appeal accepted")
    state = {image.prompt: (image.visibility, image.hidden, image.hidden_reason)
             for image in Image.objects.filter(owner=owner)}
    assert state == {
        "public one": ("public", False, ""),
        "unlisted one": ("unlisted", False, ""),
        "private one": ("private", False, ""),
        "hidden before": ("public", True, "Spam"),
        "hidden during": ("public", True, "Also bad"),
    }
    album.refresh_from_db()
    assert album.visibility == "public"
    assert other_client.get(reverse("gallery:image", args=[public.pk])).status_code == 200
    assert other_client.get(reverse("gallery:image", args=[unlisted.pk])).status_code == 200
    assert other_client.get(reverse("gallery:album", args=[album.pk])).status_code == 200
    assert other_client.get(reverse("gallery:image", args=[hidden_before.pk])).status_code == 404
    unsuspended = AuditEntry.objects.get(action=AuditEntry.Action.UNSUSPEND)
    assert unsuspended.details == {"restored_images": 2, "restored_albums": 1}


def test_staff_cannot_suspend_themselves_a_superuser_or_someone_twice(people, django_user_model, staff_client):
    root = django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    for username, refusal in (("stella", "You cannot suspend yourself."),
                              ("root", "Only a superuser can suspend a superuser.")):
        response = staff_client.post(reverse("moderation:suspend", args=[username]), {"reason": "x"}, follow=True)
        page = response.content.decode()
        assert f'<li class="message error">{refusal}</li>' in page, page
        assert 'data-testid="suspended"' not in page, "the person page does not show them as suspended"
    root.refresh_from_db()
    people["staff"].refresh_from_db()
    assert root.is_active and people["staff"].is_active
    moderation.suspend(people["owner"], people["staff"], "Abuse")
    with pytest.raises(Refusal, match="already suspended"):
        moderation.suspend(people["owner"], people["staff"], "Again")
    with pytest.raises(Refusal, match="reason"):
        moderation.suspend(people["other"], people["staff"], "")
    assert Suspension.objects.count() == 1


def test_the_person_page_offers_unsuspend_for_a_suspended_person(people, staff_client):
    moderation.suspend(people["owner"], people["staff"], "Abuse")
    html = staff_client.get(reverse("moderation:person", args=["olive"])).content.decode()
    assert "Suspended since" in html and "Unsuspend olive" in html
    staff_client.post(reverse("moderation:unsuspend", args=["olive"]), {"reason": "ok"})
    people["owner"].refresh_from_db()
    assert people["owner"].is_active
    assert can_sign_in("olive")
    html = staff_client.get(reverse("moderation:person", args=["olive"])).content.decode()
    assert "Suspended since" not in html and ">Suspend olive</button>" in html, "suspending is offered again"


def test_suspension_cancels_the_persons_lora_trainings_too(people, model, settings):
    from tests.generation.test_lora_trainings import plus_album
    from generation.models import LoraTraining
    from generation.training_jobs import submit_training

    settings.LDM_MAX_ACTIVE_TRAININGS = 2
    album = plus_album(people["owner"], 1)
    queued = submit_training(people["owner"], {"name": "plsgn", "trigger": "plsgn", "album": album.pk})
    suspension = moderation.suspend(people["owner"], people["staff"], "Abuse")
    queued.refresh_from_db()
    assert queued.status == LoraTraining.Status.CANCELLED
    assert suspension.cancelled_jobs == 1
