"""Reporting a LoRA like an image: the LoRA page's button and the API, the staff queue's LoRA tab,
hiding (audited, reports actioned) and dismissing, and what the reporter sees afterwards."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from gallery import moderation, services
from gallery.models import Lora, Report
from gallery.moderation_models import AuditEntry
from generation.admission import Refusal
from ldmsite.accounts.tokens import create_token
from tests.moderation.conftest import client_for


@pytest.fixture
def shared_lora(people, model):
    return Lora.objects.create(owner=people["owner"], name="inky", base_model=model, file="loras/inky.safetensors",
                               file_hash="ab" * 32, visibility="public", trigger_words="inky style")


def test_a_person_reports_a_shared_lora_once_from_its_page_and_never_their_own(people, shared_lora, other_client,
                                                                              owner_client):
    page = other_client.get(shared_lora.get_absolute_url()).content.decode()
    assert "Report this LoRA" in page and reverse("gallery:report_lora", args=[shared_lora.pk]) in page
    assert "Report this LoRA" not in owner_client.get(shared_lora.get_absolute_url()).content.decode()
    url = reverse("gallery:report_lora", args=[shared_lora.pk])
    other_client.post(url, {"reason": "copyright", "text": "my style"})
    other_client.post(url, {"reason": "spam"})
    owner_client.post(url, {"reason": "spam"})
    assert list(Report.objects.values_list("reporter__username", "lora_id", "image_id", "reason")) == [
        ("oscar", shared_lora.pk, None, "copyright")]
    with pytest.raises(Refusal) as refused:
        services.report_lora(people["owner"], shared_lora, "spam")
    assert refused.value.errors == {"lora": "you cannot report your own LoRA"}


def test_the_api_reports_a_lora_and_a_private_one_is_a_404(people, shared_lora):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(people['other'], 't', ['read', 'write'])[1]}")
    response = client.post(f"/api/v1/loras/{shared_lora.pk}/report/", {"reason": "spam", "text": "ads"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["lora"] == shared_lora.pk and response.json()["image"] is None
    again = client.post(f"/api/v1/loras/{shared_lora.pk}/report/", {"reason": "spam"}, format="json")
    assert again.status_code == 409 and "already reported this LoRA" in again.json()["errors"]["lora"]
    assert [report["lora"] for report in client.get("/api/v1/reports/").json()["results"]] == [shared_lora.pk]
    shared_lora.visibility = "private"
    shared_lora.save()
    assert client.post(f"/api/v1/loras/{shared_lora.pk}/report/", {"reason": "spam"},
                       format="json").status_code == 404


def test_staff_see_reported_loras_in_the_queue_and_hiding_one_is_audited_and_closes_its_reports(
        people, shared_lora, staff_client, other_client):
    services.report_lora(people["other"], shared_lora, "copyright", "copied from my work")
    response = staff_client.get(reverse("moderation:queue") + "?tab=loras")
    assert response.status_code == 200 and response.context["counts"]["loras"] == 1
    html = response.content.decode()
    assert "owner/inky" not in html and "olive/inky" in html and "Copyright ×1" in html and "copied from my work" in html
    assert client_for(people["other"]).get(reverse("moderation:queue") + "?tab=loras").status_code == 403
    assert other_client.post(reverse("moderation:hide_lora", args=[shared_lora.pk]),
                             {"reason": "x"}).status_code == 403
    staff_client.post(reverse("moderation:hide_lora", args=[shared_lora.pk]), {"reason": ""})
    shared_lora.refresh_from_db()
    assert not shared_lora.hidden, "hiding needs a reason the owner sees"
    staff_client.post(reverse("moderation:hide_lora", args=[shared_lora.pk]), {"reason": "Copies an artist"})
    shared_lora.refresh_from_db()
    assert shared_lora.hidden and shared_lora.hidden_reason == "Copies an artist"
    assert Report.objects.get().status == "actioned"
    entry = AuditEntry.objects.get(action=AuditEntry.Action.HIDE_LORA)
    assert (entry.actor, entry.target_type, entry.target_id, entry.via) == (people["staff"], "lora", shared_lora.pk,
                                                                            "page")
    assert other_client.get(shared_lora.get_absolute_url()).status_code == 404
    owner_page = client_for(people["owner"]).get(shared_lora.get_absolute_url()).content.decode()
    assert "Hidden by moderators: Copies an artist" in owner_page
    mine = other_client.get(reverse("moderation:my_reports")).content.decode()
    assert "Staff acted on it" in mine and "No longer shown" in mine
    assert staff_client.get(reverse("moderation:queue") + "?tab=loras").context["counts"]["loras"] == 0


def test_dismissing_a_loras_reports_leaves_it_shared_and_is_audited(people, shared_lora, staff_client,
                                                                   other_client):
    services.report_lora(people["other"], shared_lora, "spam")
    staff_client.post(reverse("moderation:dismiss_lora", args=[shared_lora.pk]), {"reason": "not spam"})
    shared_lora.refresh_from_db()
    assert not shared_lora.hidden and Report.objects.get().status == "dismissed"
    entry = AuditEntry.objects.get(action=AuditEntry.Action.DISMISS_REPORTS)
    assert (entry.target_type, entry.target_id, entry.reason) == ("lora", shared_lora.pk, "not spam")
    mine = other_client.get(reverse("moderation:my_reports")).content.decode()
    assert "Dismissed" in mine and "LoRA olive/inky" in mine
    moderation.hide_lora(shared_lora, people["staff"], "later")
    moderation.unhide_lora(shared_lora, people["staff"], "appeal")
    shared_lora.refresh_from_db()
    assert not shared_lora.hidden
