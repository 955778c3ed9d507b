"""API clients stream job events with a token that never appears in the URL."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from generation import events
from generation.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from generation.services import submit_generation
from ldmsite.accounts.tokens import revoke_token
from ldmsite.websockets import websocket_application
from tests.api.conftest import make_token

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


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
    _, connected, code = await connect(f"/ws/generations/{job.pk}/", subprotocols=["ldmsite", f"ldmsite.token.{token}"])
    assert not connected and code == CLOSE_NOT_FOUND


@pytest.mark.parametrize("problem", ["invalid", "revoked", "no read scope"])
async def test_an_unusable_token_is_refused_like_an_anonymous_client(tiny_model, alice, problem):
    job = await new_job(alice)
    token = await token_for(alice, scopes=("generate",) if problem == "no read scope" else ("read",))
    if problem == "invalid":
        token = token[:-4] + "AAAA"
    if problem == "revoked":
        from ldmsite.accounts.models import AccessToken
        await sync_to_async(lambda: revoke_token(AccessToken.objects.get(user=alice)))()
    _, connected, code = await connect(f"/ws/generations/{job.pk}/", subprotocols=["ldmsite", f"ldmsite.token.{token}"])
    assert not connected and code == CLOSE_UNAUTHENTICATED


async def test_a_token_in_the_url_is_not_accepted(tiny_model, alice):
    job = await new_job(alice)
    token = await token_for(alice)
    _, connected, code = await connect(f"/ws/generations/{job.pk}/?token={token}",
                                       headers=[(b"origin", b"http://127.0.0.1")])
    assert not connected and code == CLOSE_UNAUTHENTICATED


async def test_browser_sessions_still_need_an_allowed_origin(tiny_model, alice):
    job = await new_job(alice)

    @sync_to_async
    def cookie():
        client = Client()
        client.force_login(alice)
        return f"sessionid={client.cookies['sessionid'].value}".encode()

    session = await cookie()
    _, connected, _ = await connect(f"/ws/generations/{job.pk}/", headers=[(b"cookie", session)])
    assert not connected, "a cookie without an Origin header is refused"
    _, connected, _ = await connect(f"/ws/generations/{job.pk}/",
                                    headers=[(b"cookie", session), (b"origin", b"https://evil.example")])
    assert not connected
    communicator, connected, _ = await connect(f"/ws/generations/{job.pk}/",
                                               headers=[(b"cookie", session), (b"origin", b"http://127.0.0.1")])
    assert connected
    await communicator.disconnect()
