"""Login lockout (django-axes): it ends at a fixed time after it began, and it counts the client's
own address, which comes from the proxy's X-Forwarded-For only when LDM_BEHIND_PROXY is on.

Issue 24, weakness 5: every attempt during the cool-off used to move the lockout's start forward,
so an attacker could keep a person locked out for ever; behind a proxy every client had the
proxy's address, so one attacker locked a username for everybody.
"""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from ldmsite.api.throttles import client_address

User = get_user_model()
PASSWORD = "violet-lantern-4821"
PROXY = "10.0.0.2"  # the reverse proxy: the address daphne sees for every client behind it


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


def log_in(client, password, **headers):
    return client.post(reverse("login"), {"username": "alice", "password": password}, **headers)


def lock_out(client, settings, **headers):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "wrong-password-1", **headers)
    assert log_in(client, PASSWORD, **headers).status_code == 429


def time_passes(delta: timedelta) -> None:
    """Move every recorded attempt into the past, as if `delta` had gone by."""
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= delta
        attempt.save(update_fields=["attempt_time"])


def test_a_lockout_ends_at_a_fixed_time_however_many_attempts_are_made_during_it(client, alice, settings):
    cool_off = timedelta(hours=settings.AXES_COOLOFF_TIME)
    lock_out(client, settings)
    time_passes(cool_off - timedelta(seconds=30))
    # Thirty seconds before the end: still locked, whatever is tried (the right password too) ...
    assert log_in(client, "wrong-password-1").status_code == 429
    assert log_in(client, PASSWORD).status_code == 429
    # ... and those attempts do not push the end back: a minute later the right password works.
    time_passes(timedelta(seconds=60))
    response = log_in(client, PASSWORD)
    assert response.status_code == 302, "the lockout ended at its fixed time"
    assert client.get(reverse("accounts:profile")).status_code == 200


def test_without_a_proxy_a_forwarded_for_header_is_ignored(alice, settings):
    settings.LDM_BEHIND_PROXY = False
    attacker = Client(REMOTE_ADDR="198.51.100.7")
    lock_out(attacker, settings, HTTP_X_FORWARDED_FOR="203.0.113.1")
    # Another made-up header changes nothing: the address is the connection's own.
    assert log_in(attacker, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.99").status_code == 429
    assert Client(REMOTE_ADDR="192.0.2.50").post(
        reverse("login"), {"username": "alice", "password": PASSWORD}).status_code == 302


def test_behind_a_proxy_one_client_cannot_lock_a_person_out_for_everyone(alice, settings):
    settings.LDM_BEHIND_PROXY = True
    attacker = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.7")
    lock_out(attacker, settings)
    alice_at_home = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="192.0.2.50")
    assert log_in(alice_at_home, PASSWORD).status_code == 302, "her own address is not locked"


def test_behind_a_proxy_the_address_the_proxy_appended_counts_not_what_the_client_wrote(alice, settings):
    """A proxy that appends to X-Forwarded-For passes on whatever the client sent before it: only
    the last entry, written by the proxy itself, is the client's address."""
    settings.LDM_BEHIND_PROXY = True
    lock_out(Client(REMOTE_ADDR=PROXY), settings, HTTP_X_FORWARDED_FOR="1.1.1.1, 198.51.100.7")
    rotating = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="2.2.2.2, 198.51.100.7")
    assert log_in(rotating, PASSWORD).status_code == 429, "a made-up first entry does not escape the lockout"


@pytest.mark.parametrize("behind_proxy, remote, forwarded, expected", [
    (False, "198.51.100.7", None, "198.51.100.7"),
    (False, "198.51.100.7", "203.0.113.1", "198.51.100.7"),
    (True, PROXY, "203.0.113.1", "203.0.113.1"),
    (True, PROXY, "1.1.1.1, 203.0.113.1", "203.0.113.1"),
    (True, PROXY, " 203.0.113.1 ,", "203.0.113.1"),
    (True, PROXY, "not an address", PROXY),
    (True, PROXY, None, PROXY),
])
def test_the_client_address_rule(rf, settings, behind_proxy, remote, forwarded, expected):
    settings.LDM_BEHIND_PROXY = behind_proxy
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    assert client_address(rf.get("/", **headers)) == expected
