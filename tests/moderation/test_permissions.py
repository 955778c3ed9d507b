"""Only staff can moderate: every moderation URL answers 403 or 404 to anyone else, and the audit
log cannot be changed or deleted through the site (pages, admin) or the API."""

import pytest
from django.test import Client
from django.urls import URLPattern, reverse

from gallery import moderation, moderation_urls
from gallery.moderation_models import AuditEntry, BlocklistEntry, FlaggedPrompt

PERSONAL = {"my_reports"}  # a person's own reports: for anyone signed in, showing only their own


@pytest.fixture
def targets(people, public_image):
    entry = BlocklistEntry.objects.create(pattern="forbidden", kind="term")
    flagged = FlaggedPrompt.objects.create(user=people["other"], prompt="x", pattern="forbidden", matched="x")
    return {"pk": public_image.pk, "username": "olive", "entry": entry.pk, "flagged": flagged.pk}


def moderation_urls_to_try(targets):
    for pattern in moderation_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        if pattern.name in PERSONAL:
            continue
        kwargs = {}
        if "<int:pk>" in str(pattern.pattern):
            key = "entry" if "blocklist" in str(pattern.pattern) else "flagged" if "flagged" in str(
                pattern.pattern) else "pk"
            kwargs["pk"] = targets[key]
        if "<str:username>" in str(pattern.pattern):
            kwargs["username"] = targets["username"]
        yield reverse(f"moderation:{pattern.name}", kwargs=kwargs)


def test_people_who_are_not_staff_get_403_or_404_on_every_moderation_url(people, targets, other_client,
                                                                          public_image):
    urls = list(moderation_urls_to_try(targets))
    assert len(urls) >= 15
    for client in (Client(), other_client):
        for url in urls:
            for method in (client.get, client.post):
                response = method(url, {"reason": "because", "text": "note", "pattern": "x", "kind": "term",
                                        "action": "reject"})
                assert response.status_code in (403, 404), (url, method.__name__, response.status_code)
    public_image.refresh_from_db()
    assert not public_image.hidden and people["owner"].is_active
    assert not AuditEntry.objects.exists()
    assert list(BlocklistEntry.objects.values_list("pattern", flat=True)) == ["forbidden"]


def test_staff_can_open_every_moderation_page(people, targets, staff_client):
    for url in moderation_urls_to_try(targets):
        response = staff_client.get(url)
        assert response.status_code in (200, 405), (url, response.status_code)  # 405: actions are POST only


def test_a_suspended_staff_member_cannot_moderate(people, staff_client, targets):
    people["staff"].is_active = False
    people["staff"].save()
    assert staff_client.get(reverse("moderation:queue")).status_code in (302, 403)


def test_my_reports_needs_a_sign_in(people):
    response = Client().get(reverse("moderation:my_reports"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_navigation_shows_moderation_to_staff_only(people, staff_client, other_client):
    queue = reverse("moderation:queue")
    assert f'href="{queue}"' in staff_client.get(reverse("gallery:explore")).content.decode()
    assert f'href="{queue}"' not in other_client.get(reverse("gallery:explore")).content.decode()


def test_the_audit_log_cannot_be_changed_or_deleted_in_the_admin_even_by_a_superuser(
        people, public_image, admin_client):
    moderation.hide_image(public_image, people["staff"], "Spam")
    entry = AuditEntry.objects.get()
    change = reverse("admin:gallery_auditentry_change", args=[entry.pk])
    assert admin_client.get(change).status_code == 200, "staff can read it"
    admin_client.post(change, {"reason": "rewritten", "action": "image.unhide"})
    assert admin_client.get(reverse("admin:gallery_auditentry_delete", args=[entry.pk])).status_code == 403
    assert admin_client.post(reverse("admin:gallery_auditentry_delete", args=[entry.pk]),
                             {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:gallery_auditentry_add")).status_code == 403
    changelist = admin_client.post(reverse("admin:gallery_auditentry_changelist"),
                                   {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert changelist.status_code in (200, 302)
    entry.refresh_from_db()
    assert AuditEntry.objects.count() == 1 and entry.reason == "Spam" and entry.action == "image.hide"

