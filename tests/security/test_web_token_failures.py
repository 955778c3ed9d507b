"""Failed token authentications are throttled per client address and logged without the token.

Issue 24, weakness 9: 400 wrong tokens went through in 4.9 s with no 429 and no log line.
(The websocket side of the same limit is in tests/api/test_websocket_auth.py.)
"""

import base64
import logging

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.api.conftest import make_token

LIMIT = 5
WRONG = "ldm_" + "x" * 43  # looks like a token, is none


@pytest.fixture(autouse=True)
def failure_limit(settings):
    settings.LDM_TOKEN_FAILURE_RATE = f"{LIMIT}/minute"
    cache.clear()
    yield
    cache.clear()


def bearer(token, address="198.51.100.7", **extra):
    client = APIClient(REMOTE_ADDR=address, **extra)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_wrong_tokens_from_one_address_are_refused_with_429_past_the_limit(people):
    answers = [bearer(f"{WRONG[:-3]}{n:03d}").get("/api/v1/me/") for n in range(LIMIT + 3)]
    assert [answer.status_code for answer in answers[:LIMIT]] == [401] * LIMIT
    refused = answers[LIMIT]
    assert refused.status_code == 429, refused.content
    assert refused.json()["limit"] == "token_failures"
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Past the limit even the right token is not looked at from that address ...
    good = make_token(people["owner"], ["read"])
    assert bearer(good).get("/api/v1/me/").status_code == 429
    # ... while another address is unaffected.
    assert bearer(good, address="192.0.2.50").get("/api/v1/me/").status_code == 200


def test_right_tokens_do_not_count(people):
    good = make_token(people["owner"], ["read"])
    for _ in range(LIMIT * 3):
        assert bearer(good).get("/api/v1/me/").status_code == 200
    assert bearer(WRONG).get("/api/v1/me/").status_code == 401


def test_basic_auth_on_the_a1111_api_counts_too(people):
    client = APIClient(REMOTE_ADDR="198.51.100.7")
    credentials = base64.b64encode(f"me:{WRONG}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    codes = [client.get("/sdapi/v1/sd-models").status_code for _ in range(LIMIT + 1)]
    assert codes == [401] * LIMIT + [429]


def test_a_forged_forwarded_for_header_does_not_escape_the_limit(people, settings):
    settings.LDM_BEHIND_PROXY = False
    codes = [bearer(WRONG, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").get("/api/v1/me/").status_code
             for n in range(LIMIT + 1)]
    assert codes[-1] == 429


def test_behind_a_proxy_the_limit_is_per_client_not_per_proxy(people, settings):
    settings.LDM_BEHIND_PROXY = True
    for _ in range(LIMIT + 1):
        bearer(WRONG, address="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.7").get("/api/v1/me/")
    good = make_token(people["owner"], ["read"])
    assert bearer(good, address="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.50").get("/api/v1/me/").status_code == 200


def test_each_failure_is_logged_with_address_and_reason_never_the_token(people, caplog):
    revoked = make_token(people["owner"], ["read"])
    from ldmsite.accounts.models import AccessToken
    from ldmsite.accounts.tokens import revoke_token
    revoke_token(AccessToken.objects.get(user=people["owner"]))
    with caplog.at_level(logging.INFO):
        bearer(WRONG).get("/api/v1/me/")
        bearer(revoked).get("/api/v1/generations/")
    failures = [record for record in caplog.records if record.name.startswith("ldmsite")
                and "token" in record.getMessage().lower()]
    assert len(failures) == 2, [record.getMessage() for record in caplog.records]
    assert "198.51.100.7" in failures[0].getMessage() and "Invalid token" in failures[0].getMessage()
    assert "revoked" in failures[1].getMessage() and "/api/v1/generations/" in failures[1].getMessage()
    everything = "\n".join(f"{record.getMessage()} {record.args!r} {record.__dict__!r}" for record in caplog.records)
    for secret in (WRONG, revoked, WRONG[4:], revoked[4:], revoked[:12]):
        assert secret not in everything, "no part of a token is logged"
