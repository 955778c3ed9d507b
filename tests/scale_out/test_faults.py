"""Fault injection on the full stack (PostgreSQL, Redis, daphne, two workers).
The outcomes are recorded in docs/RELIABILITY.md."""

import asyncio
import json
import threading
import time
from collections import Counter

import pytest
import websockets

from tests.scale_out.harness import follow, run_async

pytestmark = pytest.mark.timeout(900)  # whole-stack start-up and recovery on 2 shared cores


def test_restarting_redis_while_jobs_are_queued_and_running_loses_none_of_twenty(stack):
    stack.start_worker()
    stack.start_worker()
    for name in ("kim", "lee"):
        stack.create_user(name)
    sessions = {name: stack.sign_in(name) for name in ("kim", "lee")}
    jobs = []
    for index in range(20):
        name = ("kim", "lee")[index % 2]
        jobs.append((name, stack.submit(sessions[name], steps=8, seed=index, num_images=1)))
    deadline = time.monotonic() + 120
    while "running" not in stack.job_statuses().values():
        assert time.monotonic() < deadline, f"no job started within 120 s: {stack.job_statuses()}"
        time.sleep(0.2)
    stack.stop_redis()  # no persistence: every queued message is gone, every connection cut
    at_restart = Counter(stack.job_statuses().values())
    stack.start_redis()
    assert at_restart["running"] >= 1 and at_restart["queued"] >= 1, f"jobs at the restart: {at_restart}"

    states = {}
    for name in ("kim", "lee"):
        ids = [job_id for owner, job_id in jobs if owner == name]
        states.update(stack.wait_until_final(sessions[name], ids, timeout=400))
    assert len(states) == 20
    not_succeeded = {job_id: (s["status"], s["error"]) for job_id, s in states.items() if s["status"] != "succeeded"}
    assert not not_succeeded, f"jobs at the restart: {at_restart}; not succeeded: {not_succeeded}"
    assert all(len(s["images"]) == 1 for s in states.values()), "one image each, none lost or duplicated"


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

    restarted = threading.Event()

    def restart_when_running():
        deadline = time.monotonic() + 240
        while not any(m["type"] == "generation.progress" for m in seen):
            if time.monotonic() > deadline:
                return  # never running: the assertion on `restarted` below says so
            time.sleep(0.1)
        stack.restart_web()
        restarted.set()

    restarter = threading.Thread(target=restart_when_running, name="web-restarter", daemon=True)
    restarter.start()
    try:
        run_async(asyncio.wait_for(client(), 320))
    finally:
        restarter.join(timeout=360)  # its own 240 s wait, then a web start-up (up to 90 s) and a margin
    assert not restarter.is_alive(), "the web restart did not finish within 6 minutes"
    assert restarted.is_set(), "the job never showed progress, so the web tier was not restarted while it ran"

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
