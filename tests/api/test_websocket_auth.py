"""API clients stream job events with a token that never appears in the URL; browsers only from
the site's own origin (scheme, host and port) or CSRF_TRUSTED_ORIGINS. A refused connection is
accepted and then closed with the documented code (docs/API.md), so a client can tell why."""

import logging

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.test import Client

from gallery.moderation import suspend
from generation import events
from generation.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from generation.services import submit_generation
from ldmsite.accounts.tokens import revoke_token
from ldmsite.websockets import CLOSE_FORBIDDEN_ORIGIN, CLOSE_TOO_MANY_FAILURES, websocket_application
from tests.api.conftest import make_token

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
SITE = [(b"host", b"127.0.0.1:8000")]


@sync_to_async
def new_job(user):
    return submit_generation(user, {"prompt": "a red circle", "steps": 2, "seed": 1})


@sync_to_async
def token_for(user, scopes=("read",)):
    return make_token(user, scopes)


async def connect(path, subprotocols=None, headers=None):
    communicator = WebsocketCommunicator(websocket_application, path, headers=headers or [],
                                         subprotocols=subprotocols)
    connected, detail = await communicator.connect()
    return communicator, connected, detail


async def close_code(communicator) -> int:
    """The code of the close that follows an accepted handshake (no message comes before it)."""
    message = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def refused_with(path, subprotocols=None, headers=None) -> int:
    """Open, expect the handshake to be accepted and the socket closed at once; the close code."""
    communicator, connected, _ = await connect(path, subprotocols, headers)
    assert connected, "refusals are accept-then-close, never an HTTP 403 at the handshake"
    return await close_code(communicator)


async def opened(path, headers=None, subprotocols=None):
    """Open and expect the stream to stay open: a snapshot or nothing, but no close."""
    communicator, connected, _ = await connect(path, subprotocols, headers)
    assert connected
    if not await communicator.receive_nothing(timeout=0.5):
        message = await communicator.receive_output()
        assert message["type"] == "websocket.send", message
    return communicator


@sync_to_async
def session_cookie(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_a_token_in_the_subprotocol_opens_the_stream_without_any_origin(tiny_model, alice):
    job = await new_job(alice)
    token = await token_for(alice)
    communicator, connected, subprotocol = await connect(
        f"/ws/generations/{job.pk}/", subprotocols=["ldmsite", f"ldmsite.token.{token}"])
    assert connected and subprotocol == "ldmsite", "the token is not echoed back"
    snapshot = await communicator.receive_json_from()
    assert (snapshot["type"], snapshot["job"], snapshot["status"]) == ("generation.snapshot", job.pk, "queued")
    await sync_to_async(events.publish)(job, "generation.progress", step=1, total=2, eta=0.1)
    progress = await communicator.receive_json_from(timeout=5)
    assert (progress["type"], progress["step"]) == ("generation.progress", 1)
    await communicator.disconnect()


async def test_a_bearer_header_opens_the_personal_stream(tiny_model, alice, bob):
    mine, _ = await new_job(alice), await new_job(bob)
    token = await token_for(alice)
    communicator, connected, _ = await connect(
        "/ws/generations/", headers=[(b"authorization", f"Bearer {token}".encode())])
    assert connected
    assert (await communicator.receive_json_from())["job"] == mine.pk
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_a_token_connection_from_another_origin_is_allowed_because_it_carries_no_cookie(tiny_model, alice):
    job = await new_job(alice)
    token = await token_for(alice)
    _, connected, _ = await connect(f"/ws/generations/{job.pk}/", subprotocols=["ldmsite", f"ldmsite.token.{token}"],
                                    headers=[(b"origin", b"https://tool.example")])
    assert connected


async def test_someone_elses_job_stays_closed_to_a_token(tiny_model, alice, bob):
    job = await new_job(alice)
    token = await token_for(bob)
    code = await refused_with(f"/ws/generations/{job.pk}/", subprotocols=["ldmsite", f"ldmsite.token.{token}"])
    assert code == CLOSE_NOT_FOUND


@pytest.mark.parametrize("problem", ["invalid", "revoked", "no read scope"])
async def test_an_unusable_token_is_refused_like_an_anonymous_client(tiny_model, alice, problem):
    job = await new_job(alice)
    token = await token_for(alice, scopes=("generate",) if problem == "no read scope" else ("read",))
    if problem == "invalid":
        token = token[:-4] + "AAAA"
    if problem == "revoked":
        from ldmsite.accounts.models import AccessToken
        await sync_to_async(lambda: revoke_token(AccessToken.objects.get(user=alice)))()
    communicator, connected, subprotocol = await connect(
        f"/ws/generations/{job.pk}/", subprotocols=["ldmsite", f"ldmsite.token.{token}"])
    assert connected and subprotocol == "ldmsite", "a browser sees the close code only after a handshake"
    assert await close_code(communicator) == CLOSE_UNAUTHENTICATED


async def test_a_token_in_the_url_is_not_accepted(tiny_model, alice):
    job = await new_job(alice)
    token = await token_for(alice)
    code = await refused_with(f"/ws/generations/{job.pk}/?token={token}",
                              headers=[*SITE, (b"origin", b"http://127.0.0.1:8000")])
    assert code == CLOSE_UNAUTHENTICATED


async def test_browser_sessions_still_need_an_allowed_origin(tiny_model, alice):
    job = await new_job(alice)
    session = await session_cookie(alice)
    path = f"/ws/generations/{job.pk}/"
    code = await refused_with(path, headers=[*SITE, (b"cookie", session)])
    assert code == CLOSE_FORBIDDEN_ORIGIN, "a cookie without an Origin header is refused"
    assert await refused_with(path, headers=[*SITE, (b"cookie", session), (b"origin", b"https://evil.example")]) \
        == CLOSE_FORBIDDEN_ORIGIN
    communicator, connected, _ = await connect(path, headers=[*SITE, (b"cookie", session),
                                                              (b"origin", b"http://127.0.0.1:8000")])
    assert connected
    assert (await communicator.receive_json_from())["type"] == "generation.snapshot"
    await communicator.disconnect()


# --- The origin is scheme, host and port (issue 24, weakness 7) ----------------------------------

@pytest.mark.parametrize("origin", [
    b"http://127.0.0.1:8001",  # another port of the same host: another site
    b"http://127.0.0.1",  # port 80
    b"https://127.0.0.1:8000",  # another scheme
    b"http://localhost:8000",  # an allowed host name, but not the one the page was served from
    b"null",  # a sandboxed frame or a file:// page
    b"http://127.0.0.1:8000.evil.example",
])
async def test_a_page_on_another_port_scheme_or_host_cannot_use_the_cookie(tiny_model, alice, origin):
    job = await new_job(alice)
    session = await session_cookie(alice)
    code = await refused_with(f"/ws/generations/{job.pk}/", headers=[*SITE, (b"cookie", session), (b"origin", origin)])
    assert code == CLOSE_FORBIDDEN_ORIGIN


async def test_a_host_the_site_does_not_answer_to_is_refused(tiny_model, alice):
    session = await session_cookie(alice)
    code = await refused_with("/ws/generations/", headers=[(b"host", b"evil.example"), (b"cookie", session),
                                                         (b"origin", b"http://evil.example")])
    assert code == CLOSE_FORBIDDEN_ORIGIN


async def test_csrf_trusted_origins_are_trusted_for_websockets(tiny_model, alice, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://ldm.example.com", "https://*.tools.example"]
    session = await session_cookie(alice)
    for origin in (b"https://ldm.example.com", b"https://panel.tools.example"):
        communicator = await opened("/ws/generations/", headers=[*SITE, (b"cookie", session), (b"origin", origin)])
        await communicator.disconnect()
    code = await refused_with("/ws/generations/", headers=[*SITE, (b"cookie", session),
                                                          (b"origin", b"http://ldm.example.com")])
    assert code == CLOSE_FORBIDDEN_ORIGIN, "a trusted origin is trusted with its own scheme only"


async def test_behind_a_tls_proxy_the_site_origin_is_https(tiny_model, alice, settings):
    session = await session_cookie(alice)
    behind = [(b"host", b"ldm.example.com"), (b"x-forwarded-proto", b"https"), (b"cookie", session)]
    settings.ALLOWED_HOSTS = ["ldm.example.com"]
    settings.LDM_BEHIND_PROXY = True  # what settings.py derives from it:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    communicator = await opened("/ws/generations/", headers=[*behind, (b"origin", b"https://ldm.example.com")])
    await communicator.disconnect()
    assert await refused_with("/ws/generations/", headers=[*behind, (b"origin", b"http://ldm.example.com")]) \
        == CLOSE_FORBIDDEN_ORIGIN
    # Without the setting the header is the client's word: ignored.
    settings.LDM_BEHIND_PROXY, settings.SECURE_PROXY_SSL_HEADER = False, None
    assert await refused_with("/ws/generations/", headers=[*behind, (b"origin", b"https://ldm.example.com")]) \
        == CLOSE_FORBIDDEN_ORIGIN


# --- Failed tokens are throttled and logged; a suspension closes open streams (weakness 9) -------

async def test_wrong_tokens_are_throttled_per_address_and_logged_without_the_token(tiny_model, alice, settings,
                                                                                  caplog):
    settings.LDM_TOKEN_FAILURE_RATE = "3/minute"
    await sync_to_async(cache.clear)()
    wrong = "ldm_" + "w" * 43
    with caplog.at_level(logging.INFO):
        codes = [await refused_with("/ws/generations/", subprotocols=["ldmsite", f"ldmsite.token.{wrong}"])
                 for _ in range(4)]
    assert codes == [CLOSE_UNAUTHENTICATED] * 3 + [CLOSE_TOO_MANY_FAILURES]
    token = await token_for(alice)
    assert await refused_with("/ws/generations/", headers=[(b"authorization", f"Bearer {token}".encode())]) \
        == CLOSE_TOO_MANY_FAILURES, "past the limit even a good token is not looked at from that address"
    logged = [record.getMessage() for record in caplog.records if "token" in record.getMessage().lower()]
    assert len(logged) >= 3 and all("w" * 20 not in line for line in logged)
    assert all(wrong[4:] not in f"{record.args!r}" for record in caplog.records)


async def test_suspending_a_person_closes_their_open_streams(tiny_model, alice, bob, staff):
    job = await new_job(alice)
    token = await token_for(alice)
    by_token, connected, _ = await connect(f"/ws/generations/{job.pk}/",
                                           subprotocols=["ldmsite", f"ldmsite.token.{token}"])
    assert connected
    by_cookie, connected, _ = await connect("/ws/generations/", headers=[
        *SITE, (b"cookie", await session_cookie(alice)), (b"origin", b"http://127.0.0.1:8000")])
    assert connected
    bystander = await opened("/ws/generations/", headers=[
        *SITE, (b"cookie", await session_cookie(bob)), (b"origin", b"http://127.0.0.1:8000")])
    for communicator in (by_token, by_cookie):
        assert (await communicator.receive_json_from(timeout=5))["type"] == "generation.snapshot"
    await sync_to_async(suspend)(alice, staff, "spam")
    for communicator in (by_token, by_cookie):
        while (message := await communicator.receive_output(timeout=5))["type"] != "websocket.close":
            pass  # the cancellation event of the suspended person's job may come first
        assert message["code"] == CLOSE_UNAUTHENTICATED
    assert await bystander.receive_nothing(timeout=0.3), "someone else's stream stays open"
    await bystander.disconnect()
