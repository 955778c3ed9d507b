"""Personal access tokens: made on the API tokens page, shown once, stored hashed, used,
expired, revoked, limited to their scopes."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from ldmsite.accounts.models import AccessToken
from ldmsite.accounts.tokens import hash_token
from tests.api.conftest import client_for, make_token

TOKEN_RE = re.compile(r'data-testid="new-token"[^>]*>(ldm_[A-Za-z0-9_-]+)<')


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def create_on_page(user, **fields) -> tuple[Client, str]:
    client = signed_in(user)
    data = {"name": "render script", "scopes": ["read", "generate"], "expires_in": "30", **fields}
    response = client.post(reverse("accounts:tokens"), data)
    assert response.status_code == 302, response.content.decode()[:2000]  # a reload makes no second token
    page = client.get(response["Location"])
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    return client, TOKEN_RE.search(page.content.decode()).group(1)


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_the_tokens_page_is_in_the_navigation_for_signed_in_people(alice):
    page = signed_in(alice).get(reverse("accounts:tokens"))
    assert page.status_code == 200
    assert f'href="{reverse("accounts:tokens")}"' in page.content.decode()
    assert Client().get(reverse("accounts:tokens")).status_code == 302


def test_a_new_token_is_shown_once_and_then_only_its_prefix(alice):
    client, raw = create_on_page(alice)
    listing = client.get(reverse("accounts:tokens")).content.decode()
    assert raw not in listing
    assert raw[:12] in listing and "render script" in listing
    token = AccessToken.objects.get(user=alice)
    assert token.scopes == ["read", "generate"]
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)


@pytest.mark.django_db(transaction=True)
def test_the_database_never_holds_a_usable_token(alice, settings):
    client, raw = create_on_page(alice)
    assert bearer(raw).get("/api/v1/me/").status_code == 200
    token = AccessToken.objects.get(user=alice)
    assert token.digest == hash_token(raw) and token.digest != raw
    with connection.cursor() as cursor:  # every column of every table, sessions included
        tables = connection.introspection.table_names(cursor)
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                assert not any(isinstance(value, str) and raw[4:] in value for value in row), table
    db_file = settings.DATABASES["default"]["NAME"]
    for suffix in ("", "-wal"):
        try:
            content = open(f"{db_file}{suffix}", "rb").read()
        except FileNotFoundError:
            continue
        assert raw[4:].encode() not in content


def test_a_token_authenticates_as_its_person_and_records_its_last_use(alice):
    _, raw = create_on_page(alice)
    assert AccessToken.objects.get(user=alice).last_used_at is None
    me = bearer(raw).get("/api/v1/me/")
    assert me.status_code == 200 and me.json()["username"] == "alice"
    assert me.json()["token"]["prefix"] == raw[:12]
    assert AccessToken.objects.get(user=alice).last_used_at is not None


def test_an_expired_token_is_refused_with_401_saying_so(alice):
    raw = make_token(alice)
    AccessToken.objects.filter(user=alice).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = bearer(raw).get("/api/v1/me/")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_stops_working_at_once(alice):
    client, raw = create_on_page(alice)
    token = AccessToken.objects.get(user=alice)
    response = client.post(reverse("accounts:token_revoke", args=[token.pk]))
    assert response.status_code == 302
    refused = bearer(raw).get("/api/v1/me/")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert "revoked" in client.get(reverse("accounts:tokens")).content.decode()


def test_nobody_can_revoke_someone_elses_token(alice, bob):
    raw = make_token(alice)
    token = AccessToken.objects.get(user=alice)
    assert signed_in(bob).post(reverse("accounts:token_revoke", args=[token.pk])).status_code == 404
    assert bearer(raw).get("/api/v1/me/").status_code == 200


def test_a_disabled_accounts_tokens_stop_working(alice):
    raw = make_token(alice)
    alice.is_active = False
    alice.save()
    assert bearer(raw).get("/api/v1/me/").status_code == 401


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer ldm_nope", "Bearer nope", "Token abc"])
def test_missing_or_malformed_credentials_are_a_401(alice, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get("/api/v1/me/").status_code == 401


def test_scopes_are_enforced(tiny_model, alice):
    reader = client_for(alice, scopes=("read",))
    assert reader.get("/api/v1/generations/").status_code == 200
    refused = reader.post("/api/v1/generations/", {"prompt": "a red circle"}, format="json")
    assert refused.status_code == 403 and "generate" in refused.json()["detail"]
    assert reader.post("/api/v1/albums/", {"title": "Mine"}, format="json").status_code == 403

    generator = client_for(alice, scopes=("generate",))
    assert generator.post("/api/v1/generations/", {"prompt": "a red circle", "steps": 2},
                          format="json").status_code == 202
    assert generator.get("/api/v1/generations/").status_code == 403
    writer = client_for(alice, scopes=("write",))
    assert writer.post("/api/v1/albums/", {"title": "Mine"}, format="json").status_code == 201


def test_token_creation_refuses_no_scopes_or_a_missing_name(alice):
    client = signed_in(alice)
    response = client.post(reverse("accounts:tokens"), {"name": "", "scopes": []})
    assert response.status_code == 400
    assert AccessToken.objects.count() == 0


def test_a_browser_session_works_for_the_api_but_needs_the_csrf_token(tiny_model, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/v1/me/").status_code == 200
    refused = client.post("/api/v1/albums/", {"title": "x"}, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    client.get(reverse("accounts:tokens"))  # sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    created = client.post("/api/v1/albums/", {"title": "x"}, content_type="application/json",
                          HTTP_X_CSRFTOKEN=csrf)
    assert created.status_code == 201
