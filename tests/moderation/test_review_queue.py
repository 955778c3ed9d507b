"""Reports, the staff review queue and what each action does where people can see it."""

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from gallery import moderation, services
from gallery.models import Image, Report
from gallery.moderation_models import AuditEntry, StaffNote
from tests.moderation.conftest import client_for

Action = AuditEntry.Action


def explore_ids(client) -> set[int]:
    response = client.get(reverse("gallery:explore"))
    return {image.pk for image in response.context["images"]}


# --- Reports -------------------------------------------------------------------------------------

def test_a_person_can_report_a_public_or_unlisted_image_once_while_it_is_open(people, make_image, other_client):
    public = make_image(people["owner"], visibility="public")
    unlisted = make_image(people["owner"], visibility="unlisted")
    for image in (public, unlisted):
        other_client.post(reverse("gallery:report", args=[image.pk]), {"reason": "spam", "text": "ads"})
        other_client.post(reverse("gallery:report", args=[image.pk]), {"reason": "hate"})
        assert Report.objects.filter(image=image, reporter=people["other"]).count() == 1
    moderation.dismiss_reports(public, people["staff"])
    services.report_image(people["other"], public, "violence")  # dismissed: a new report may be made
    assert Report.objects.filter(image=public, status="open").count() == 1


def test_nobody_can_report_a_private_image_of_someone_else_or_their_own(people, make_image, other_client,
                                                                        owner_client):
    private = make_image(people["owner"], visibility="private")
    assert other_client.post(reverse("gallery:report", args=[private.pk]), {"reason": "spam"}).status_code == 404
    public = make_image(people["owner"], visibility="public")
    owner_client.post(reverse("gallery:report", args=[public.pk]), {"reason": "spam"})
    assert not Report.objects.exists()


def test_reporters_see_what_became_of_their_own_reports_and_nobody_elses(people, make_image, other_client,
                                                                         staff_client):
    kept = make_image(people["owner"], prompt="a calm blue lake", visibility="public")
    removed = make_image(people["owner"], prompt="an ugly spam banner", visibility="public")
    services.report_image(people["other"], kept, "spam")
    services.report_image(people["other"], removed, "spam")
    services.report_image(people["staff"], removed, "hate")
    page = other_client.get(reverse("moderation:my_reports"))
    assert page.status_code == 200
    assert page.content.decode().count("Waiting for review") == 2
    moderation.dismiss_reports(kept, people["staff"], "not spam")
    moderation.hide_image(removed, people["staff"], "Spam")
    html = other_client.get(reverse("moderation:my_reports")).content.decode()
    assert "Dismissed" in html and "Staff acted on it" in html
    assert "No longer shown" in html, "the hidden image is not linked for the reporter"
    assert len(other_client.get(reverse("moderation:my_reports")).context["page"].object_list) == 2
    assert list(client_for(people["owner"]).get(reverse("moderation:my_reports")).context["page"].object_list) == []


# --- The queue ------------------------------------------------------------------------------------

def test_the_queue_groups_open_reports_by_image_newest_or_most_reported_first(people, make_image, staff_client,
                                                                               django_user_model):
    busy = make_image(people["owner"], prompt="a much reported picture", visibility="public")
    quiet = make_image(people["owner"], prompt="a once reported picture", visibility="unlisted")
    reporters = [django_user_model.objects.create_user(f"r{n}", password="x") for n in range(3)]
    for reporter in reporters:
        services.report_image(reporter, busy, "spam")
    services.report_image(people["other"], quiet, "copyright", "my drawing")  # the newest report
    response = staff_client.get(reverse("moderation:queue"))
    assert response.status_code == 200
    rows = list(response.context["page"])
    assert [image.pk for image in rows] == [quiet.pk, busy.pk]
    assert {image.pk: image.open_reports for image in rows} == {busy.pk: 3, quiet.pk: 1}
    assert "Spam ×3" in response.content.decode()
    most = list(staff_client.get(reverse("moderation:queue") + "?order=most_reported").context["page"])
    assert [image.pk for image in most] == [busy.pk, quiet.pk]


def test_the_review_page_shows_the_image_its_prompt_its_owner_and_what_was_done_to_them(
        people, make_image, staff_client):
    earlier = make_image(people["owner"], prompt="an earlier picture", visibility="public")
    moderation.hide_image(earlier, people["staff"], "Harassment of a named person")
    moderation.add_note(people["owner"], people["staff"], "Warned by email")
    image = make_image(people["owner"], prompt="a reported red circle", visibility="public")
    services.report_image(people["other"], image, "harassment", "targets me")
    response = staff_client.get(reverse("moderation:image", args=[image.pk]))
    html = response.content.decode()
    assert "a reported red circle" in html and "olive" in html and "targets me" in html
    assert "Harassment of a named person" in html, "the owner's history of actions against them"
    assert "Warned by email" in html
    assert response.context["reports_against"] == 1


# --- Actions and their visible effects ----------------------------------------------------------------

def test_a_hidden_image_leaves_every_public_view_at_once_but_its_file_is_kept(people, public_image, staff_client,
                                                                              other_client, owner_client):
    pk = public_image.pk
    services.report_image(people["other"], public_image, "sexual")
    assert pk in explore_ids(other_client)
    response = staff_client.post(reverse("moderation:hide", args=[pk]), {"reason": "Nudity is not allowed"})
    assert response.status_code == 302
    public_image.refresh_from_db()
    assert public_image.hidden and public_image.hidden_reason == "Nudity is not allowed"
    anonymous = Client()
    for client in (other_client, anonymous):
        assert pk not in explore_ids(client)
        assert client.get(reverse("gallery:image", args=[pk])).status_code == 404
        assert client.get(reverse("gallery:image_file", args=[pk])).status_code == 404
        assert client.get(reverse("gallery:image_thumbnail", args=[pk])).status_code == 404
        assert list(client.get(reverse("gallery:profile", args=["olive"])).context["page"].object_list) == []
        assert client.get(f"/api/v1/images/{pk}/").status_code in (401, 403, 404)
        assert client.get(f"/api/v1/images/{pk}/file/").status_code in (401, 403, 404)
    assert pk not in [item["id"] for item in other_client.get("/api/v1/explore/").json()["results"]]
    owner_page = owner_client.get(reverse("gallery:image", args=[pk])).content.decode()
    assert "Hidden by moderators: Nudity is not allowed" in owner_page
    assert default_storage.exists(public_image.file.name), "the original file is kept as evidence"
    assert staff_client.get(reverse("gallery:image_file", args=[pk])).status_code == 200
    assert Report.objects.get(image=public_image).status == Report.Status.ACTIONED
    entry = AuditEntry.objects.get(action=Action.HIDE_IMAGE)
    assert (entry.actor, entry.subject, entry.target_id, entry.reason, entry.via) == (
        people["staff"], people["owner"], pk, "Nudity is not allowed", "page")


def test_hiding_needs_a_reason_the_owner_will_read(people, public_image, staff_client):
    response = staff_client.post(reverse("moderation:hide", args=[public_image.pk]), {"reason": " "}, follow=True)
    assert "Give a reason" in response.content.decode()
    public_image.refresh_from_db()
    assert not public_image.hidden and not AuditEntry.objects.exists()


def test_unhiding_puts_the_image_back_where_it_was(people, public_image, staff_client, other_client):
    moderation.hide_image(public_image, people["staff"], "Mistake?")
    staff_client.post(reverse("moderation:unhide", args=[public_image.pk]), {"reason": "It was fine"})
    assert public_image.pk in explore_ids(other_client)
    assert AuditEntry.objects.filter(action=Action.UNHIDE_IMAGE, reason="It was fine").exists()


def test_deleting_an_image_removes_it_and_its_files_and_the_log_keeps_what_it_was(
        people, public_image, staff_client, django_capture_on_commit_callbacks):
    name, pk = public_image.file.name, public_image.pk
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("moderation:delete", args=[pk]), {"reason": "Illegal content"})
    assert response.status_code == 302
    assert not Image.objects.filter(pk=pk).exists()
    assert not default_storage.exists(name)
    entry = AuditEntry.objects.get(action=Action.DELETE_IMAGE)
    assert entry.target_id == pk and "a green square" in entry.target_label and entry.reason == "Illegal content"


def test_dismissing_closes_the_reports_and_leaves_the_image_alone(people, public_image, staff_client, other_client):
    services.report_image(people["other"], public_image, "spam")
    staff_client.post(reverse("moderation:dismiss", args=[public_image.pk]), {"reason": "Not spam"})
    assert Report.objects.get().status == Report.Status.DISMISSED
    assert public_image.pk in explore_ids(other_client)
    assert list(staff_client.get(reverse("moderation:queue")).context["page"].object_list) == []
    assert AuditEntry.objects.get(action=Action.DISMISS_REPORTS).details == {"reports_dismissed": 1}


def test_staff_can_add_a_note_about_a_person_from_an_image(people, public_image, staff_client):
    staff_client.post(reverse("moderation:note", args=["olive"]), {"text": "Second warning", "image": public_image.pk})
    note = StaffNote.objects.get()
    assert (note.subject, note.author, note.image, note.text) == (people["owner"], people["staff"], public_image,
                                                                   "Second warning")
    assert "Second warning" in staff_client.get(reverse("moderation:person", args=["olive"])).content.decode()
    assert AuditEntry.objects.filter(action=Action.NOTE, subject=people["owner"]).exists()


def test_the_audit_log_page_lists_every_action_and_filters_by_person(people, make_image, staff_client):
    image = make_image(people["owner"], visibility="public")
    moderation.hide_image(image, people["staff"], "Spam")
    moderation.add_note(people["other"], people["staff"], "Odd reports")
    response = staff_client.get(reverse("moderation:audit"))
    assert [entry.action for entry in response.context["page"]] == [Action.NOTE, Action.HIDE_IMAGE]
    only = staff_client.get(reverse("moderation:audit") + "?person=olive").context["page"]
    assert [entry.action for entry in only] == [Action.HIDE_IMAGE]


def test_the_audit_log_is_append_only(people, public_image):
    entry = moderation.hide_image(public_image, people["staff"], "Spam") and AuditEntry.objects.get()
    from gallery.moderation_models import AppendOnlyError

    entry.reason = "something else"
    with pytest.raises(AppendOnlyError):
        entry.save()
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.update(reason="x")
    assert AuditEntry.objects.get().reason == "Spam"
