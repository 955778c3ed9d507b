"""Fault injection on the full stack (PostgreSQL, Redis, daphne, two workers).
The outcomes are recorded in docs/RELIABILITY.md."""

import asyncio
import json
import threading
import time

import pytest
import websockets

from tests.scale_out.harness import follow, run_async

pytestmark = pytest.mark.timeout(900)  # whole-stack start-up and recovery on 2 shared cores


def test_restarting_redis_during_twenty_jobs_loses_none(stack):
    stack.start_worker()
    stack.start_worker()
    for name in ("kim", "lee"):
        stack.create_user(name)
    sessions = {name: stack.sign_in(name) for name in ("kim", "lee")}
    jobs = []
    for index in range(20):
        name = ("kim", "lee")[index % 2]
        jobs.append((name, stack.submit(sessions[name], steps=8, seed=index, num_images=1)))
    time.sleep(3)  # some jobs done, some running, most queued
    stack.restart_redis()  # no persistence: every queued message is gone

    states = {}
    for name in ("kim", "lee"):
        ids = [job_id for owner, job_id in jobs if owner == name]
        states.update(stack.wait_until_final(sessions[name], ids, timeout=400))
    assert len(states) == 20
    statuses = {state["status"] for state in states.values()}
    assert statuses <= {"succeeded", "failed"}, statuses
    failed = [s for s in states.values() if s["status"] == "failed"]
    assert all(s["error"] for s in failed), "a failed job says why"
    assert all(len(s["images"]) == 1 for s in states.values() if s["status"] == "succeeded")
    assert len([s for s in states.values() if s["status"] == "succeeded"]) >= 18, states


def test_clients_reconnect_after_a_web_restart_and_resync_from_the_snapshot(stack):
    stack.start_worker()
    stack.create_user("max")
    session = stack.sign_in("max")
    job_id = stack.submit(session, steps=120, width=64, height=64)
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    seen: list[dict] = []
    connections = []

    async def client():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                async with websockets.connect(f"{stack.ws}/ws/generations/{job_id}/", origin=stack.url,
                                              additional_headers={"Cookie": cookie}) as socket:
                    connections.append(time.monotonic())
                    async for raw in socket:
                        message = json.loads(raw)
                        seen.append(message)
                        if message["type"] == "generation.succeeded" or (
                                message["type"] == "generation.snapshot" and message["status"] == "succeeded"):
                            return
            except (OSError, websockets.exceptions.WebSocketException):
                await asyncio.sleep(0.5)  # the server is restarting: back off and retry
        raise AssertionError("never saw the job finish")

    def restart_when_running():
        while not any(m["type"] == "generation.progress" for m in seen):
            time.sleep(0.1)
        stack.restart_web()

    restarter = threading.Thread(target=restart_when_running)
    restarter.start()
    run_async(asyncio.wait_for(client(), 320))
    restarter.join()

    assert len(connections) >= 2, "the client reconnected"
    snapshots = [m for m in seen if m["type"] == "generation.snapshot"]
    assert len(snapshots) >= 2, "every connection starts with a snapshot"
    assert snapshots[-1]["status"] in ("running", "succeeded")
    final = stack.job(session, job_id)
    assert final["status"] == "succeeded" and len(final["images"]) == 1


def test_a_worker_asked_to_stop_finishes_its_job_first(stack):
    import signal

    worker = stack.start_worker()
    stack.create_user("ned")
    session = stack.sign_in("ned")
    job_id = stack.submit(session, steps=60, width=64, height=64)
    run_async(follow(stack, session, f"/ws/generations/{job_id}/",
                       lambda ms: any(m["type"] == "generation.progress" for m in ms)))
    # `docker compose stop` sends SIGTERM to the container's main process only; Dramatiq's main
    # process then asks its worker processes to stop consuming and finish what they run.
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=240)
    state = stack.job(session, job_id)
    assert state["status"] == "succeeded", "the job finished before the worker exited"
    assert len(state["images"]) == 1
