"""The Django admin: every model is there, and its moderation actions (bulk or single edits) do
what the staff pages do and land in the audit log."""

from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from gallery import moderation
from gallery.models import Image
from gallery.moderation_models import AuditEntry, BlocklistEntry, Suspension


def run_action(client, model_name, action, ids, **extra):
    return client.post(reverse(f"admin:{model_name}_changelist"),
                       {"action": action, "_selected_action": [str(i) for i in ids], "index": "0", **extra},
                       follow=True)


def test_every_gallery_account_and_generation_model_has_a_working_admin_list(people, public_image, admin_client):
    for app in ("gallery", "accounts", "generation"):
        for model in apps.get_app_config(app).get_models():
            assert admin.site.is_registered(model), model
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
            assert admin_client.get(url).status_code == 200, url
            assert admin_client.get(url, {"q": "x"}).status_code == 200, url


def test_bulk_hide_and_unhide_do_what_the_page_does_and_are_logged_as_bulk(people, make_image, admin_client):
    images = [make_image(people["owner"], visibility="public") for _ in range(2)]
    ids = [image.pk for image in images]
    refused = run_action(admin_client, "gallery_image", "hide_selected", ids)
    assert "Type a reason" in refused.content.decode()
    assert not Image.objects.filter(hidden=True).exists()
    run_action(admin_client, "gallery_image", "hide_selected", ids, reason="Spam wave")
    assert set(Image.objects.filter(hidden=True, hidden_reason="Spam wave").values_list("pk", flat=True)) == set(ids)
    run_action(admin_client, "gallery_image", "unhide_selected", ids)
    assert not Image.objects.filter(hidden=True).exists()
    logged = sorted(AuditEntry.objects.values_list("action", "via", "target_id", "actor_name"))
    assert logged == sorted([("image.hide", "bulk", pk, "admin") for pk in ids]
                            + [("image.unhide", "bulk", pk, "admin") for pk in ids])


def test_hiding_in_the_image_change_form_is_logged_as_an_admin_action(people, public_image, admin_client):
    url = reverse("admin:gallery_image_change", args=[public_image.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(owner=people["owner"].pk, generation=public_image.generation_id, model=public_image.model_id or "",
                hidden="on", hidden_reason="Copyright claim", metadata="{}", file=public_image.file.name)
    data.pop("thumbnail", None)
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    public_image.refresh_from_db()
    assert public_image.hidden and public_image.hidden_reason == "Copyright claim"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.via, entry.reason) == ("image.hide", "admin", "Copyright claim")


def test_bulk_suspension_from_the_user_list_and_from_images_is_logged_as_bulk(people, public_image, admin_client):
    run_action(admin_client, "auth_user", "suspend_selected", [people["other"].pk], reason="Spam bots")
    run_action(admin_client, "gallery_image", "suspend_owners", [public_image.pk], reason="Spam bots")
    for person in (people["other"], people["owner"]):
        person.refresh_from_db()
        assert not person.is_active
    public_image.refresh_from_db()
    assert public_image.hidden
    assert set(AuditEntry.objects.filter(action="user.suspend").values_list("subject_name", "via")) == {
        ("oscar", "bulk"), ("olive", "bulk")}
    run_action(admin_client, "auth_user", "unsuspend_selected", [people["owner"].pk])
    public_image.refresh_from_db()
    assert not public_image.hidden
    assert AuditEntry.objects.filter(action="user.unsuspend", via="bulk", subject=people["owner"]).exists()


def test_unticking_active_in_the_user_admin_is_a_real_suspension(people, make_image, admin_client):
    image = make_image(people["owner"], visibility="public")
    url = reverse("admin:auth_user_change", args=[people["owner"].pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items()
            if value is not None and name not in ("password", "groups", "user_permissions", "is_active")}
    data.update(date_joined_0=people["owner"].date_joined.strftime("%Y-%m-%d"),
                date_joined_1=people["owner"].date_joined.strftime("%H:%M:%S"))
    data.pop("date_joined", None)
    data.pop("last_login", None)
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    people["owner"].refresh_from_db()
    image.refresh_from_db()
    assert not people["owner"].is_active and image.hidden
    assert Suspension.objects.filter(user=people["owner"], lifted_at__isnull=True).exists()
    assert AuditEntry.objects.get().via == "admin"


def test_the_blocklist_admin_refuses_a_bad_pattern_and_logs_what_it_saves(people, admin_client):
    add = reverse("admin:gallery_blocklistentry_add")
    fields = {"kind": "regex", "whole_word": "on", "action": "reject", "enabled": "on", "note": ""}
    response = admin_client.post(add, {**fields, "pattern": "(a+)+$"})
    assert response.status_code == 200 and "Nested quantifiers" in response.content.decode()
    assert not BlocklistEntry.objects.exists()
    assert admin_client.post(add, {**fields, "pattern": "dragon(s)?"}).status_code == 302
    entry = BlocklistEntry.objects.get()
    assert entry.created_by.username == "admin"
    run_action(admin_client, "gallery_blocklistentry", "delete_selected", [entry.pk], post="yes")
    assert not BlocklistEntry.objects.exists()
    assert list(AuditEntry.objects.order_by("id").values_list("action", "via")) == [
        ("blocklist.add", "admin"), ("blocklist.delete", "bulk")]


def test_lifting_a_suspension_in_the_admin_restores_what_it_hid(people, public_image, admin_client):
    suspension = moderation.suspend(people["owner"], people["staff"], "Abuse")
    run_action(admin_client, "gallery_suspension", "lift_selected", [suspension.pk], reason="Appeal")
    public_image.refresh_from_db()
    people["owner"].refresh_from_db()
    assert people["owner"].is_active and not public_image.hidden
    assert AuditEntry.objects.filter(action="user.unsuspend", via="bulk", reason="Appeal").exists()
