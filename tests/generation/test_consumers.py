"""The job websocket streams: auth, ownership, origin, snapshot first, ordered events."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from generation import events
from generation.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from generation.models import Generation
from generation.services import submit_generation
from ldmsite.websockets import CLOSE_FORBIDDEN_ORIGIN, websocket_application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]
ORIGIN = b"http://127.0.0.1"


@sync_to_async
def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@sync_to_async
def new_job(user):
    return submit_generation(user, {"prompt": "a red circle", "steps": 3, "seed": 1})


async def open_socket(path: str, user=None, origin: bytes = ORIGIN):
    headers = [(b"host", b"127.0.0.1"), (b"origin", origin)]  # a page of http://127.0.0.1
    if user is not None:
        headers.append((b"cookie", await session_cookie(user)))
    communicator = WebsocketCommunicator(websocket_application, path, headers=headers)
    connected, detail = await communicator.connect()
    return communicator, connected, detail


async def close_code(communicator) -> int:
    """Refusals are accept-then-close (docs/API.md): the code of the close after the handshake."""
    message = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def test_an_anonymous_client_is_refused(tiny_model, alice):
    job = await new_job(alice)
    communicator, connected, _ = await open_socket(f"/ws/generations/{job.pk}/")
    assert connected and await close_code(communicator) == CLOSE_UNAUTHENTICATED


async def test_another_persons_job_closes_the_socket(tiny_model, alice, bob):
    job = await new_job(alice)
    communicator, connected, _ = await open_socket(f"/ws/generations/{job.pk}/", user=bob)
    assert connected and await close_code(communicator) == CLOSE_NOT_FOUND


async def test_staff_may_watch_any_job(tiny_model, alice, staff):
    job = await new_job(alice)
    communicator, connected, _ = await open_socket(f"/ws/generations/{job.pk}/", user=staff)
    assert connected
    assert (await communicator.receive_json_from())["job"] == job.pk
    await communicator.disconnect()


async def test_a_foreign_origin_is_refused(tiny_model, alice):
    job = await new_job(alice)
    communicator, connected, _ = await open_socket(f"/ws/generations/{job.pk}/", user=alice,
                                                   origin=b"https://evil.example")
    assert connected and await close_code(communicator) == CLOSE_FORBIDDEN_ORIGIN


async def test_the_first_message_is_a_snapshot_then_events_arrive_in_sequence(tiny_model, alice):
    job = await new_job(alice)
    communicator, connected, _ = await open_socket(f"/ws/generations/{job.pk}/", user=alice)
    assert connected
    snapshot = await communicator.receive_json_from()
    assert snapshot["type"] == "generation.snapshot"
    assert (snapshot["job"], snapshot["status"], snapshot["position"]) == (job.pk, "queued", 1)

    await sync_to_async(events.publish)(job, "generation.started", total=3)
    for step in (1, 2, 3):
        await sync_to_async(events.publish)(job, "generation.progress", step=step, total=3, eta=0.0)
    await sync_to_async(events.publish)(job, "generation.succeeded", images=[])
    received = [await communicator.receive_json_from(timeout=5) for _ in range(5)]
    assert [m["type"] for m in received] == ["generation.started"] + ["generation.progress"] * 3 + [
        "generation.succeeded"]
    sequence = [snapshot["seq"]] + [m["seq"] for m in received]
    assert sequence == sorted(set(sequence)), "sequence numbers strictly increase"
    assert all(m["job"] == job.pk for m in received)
    await communicator.disconnect()


async def test_events_older_than_the_snapshot_are_not_relayed(tiny_model, alice):
    job = await new_job(alice)
    communicator, _, _ = await open_socket(f"/ws/generations/{job.pk}/", user=alice)
    snapshot = await communicator.receive_json_from()
    stale = {"type": "generation.progress", "job": job.pk, "seq": snapshot["seq"], "step": 1, "total": 3}
    await events._send_to_groups([events.job_group(job.pk)], stale)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_the_personal_stream_carries_all_my_jobs_and_nobody_elses(tiny_model, alice, bob):
    mine_1, mine_2 = await new_job(alice), await new_job(alice)
    theirs = await new_job(bob)
    communicator, connected, _ = await open_socket("/ws/generations/", user=alice)
    assert connected
    snapshots = [await communicator.receive_json_from() for _ in range(2)]
    assert {s["job"] for s in snapshots} == {mine_1.pk, mine_2.pk}
    await sync_to_async(events.publish)(theirs, "generation.started", total=3)
    await sync_to_async(events.publish)(mine_2, "generation.started", total=3)
    message = await communicator.receive_json_from(timeout=5)
    assert (message["type"], message["job"]) == ("generation.started", mine_2.pk)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_a_client_that_reconnects_to_a_running_job_sees_its_latest_preview_at_once(tiny_model, alice):
    job = await new_job(alice)
    preview = "data:image/webp;base64,UklGRg=="
    await sync_to_async(Generation.objects.filter(pk=job.pk).update)(status="running", step=2, total_steps=3,
                                                                     preview=preview)
    communicator, connected, _ = await open_socket(f"/ws/generations/{job.pk}/", user=alice)
    assert connected
    snapshot = await communicator.receive_json_from()
    assert (snapshot["status"], snapshot["step"], snapshot["preview"]) == ("running", 2, preview)
    await communicator.disconnect()
