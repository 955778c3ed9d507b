"""Scale-out mode end to end: real redis-server, a real daphne process and separate
`rundramatiq` worker processes. A client signs in, submits, and receives progress
previews over a real websocket from the worker process; then a worker killed with
SIGKILL mid-job leaves no job stuck and no image duplicated."""

import asyncio
import json
import os
import signal
import subprocess
import time

import pytest
import requests
import websockets

from tests.conftest import PYTHON, REPO, free_port, manage, site_env, stop, wait_for_port
from tests.generation.diffusion.tiny import build_tiny_pipeline

PASSWORD = "violet-lantern-4821"


def start(args, env, log_path):
    log = open(log_path, "w")
    # Own process group, so SIGKILL reaches the worker command and the processes it forks.
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture
def stack(tmp_path, redis_server):
    env = site_env(
        tmp_path / "data", REDIS_URL=redis_server, SECRET_KEY="scale-out-" + "s" * 50,
        LDM_HEARTBEAT_SECONDS="1", LDM_HEARTBEAT_TIMEOUT_SECONDS="4", LDM_RECOVERY_INTERVAL_SECONDS="1",
        LDM_PRECISION="fp32",
    )
    assert manage(env, "migrate", "--noinput").returncode == 0
    model_dir = build_tiny_pipeline(tmp_path / "tiny", with_clip=True)
    added = manage(env, "add_model", str(model_dir), "--name", "Tiny", "--slug", "tiny", "--default")
    assert added.returncode == 0, added.stderr
    created = manage(env, "shell", "-c",
                     f"from django.contrib.auth.models import User; User.objects.create_user('erin', 'e@x.org', '{PASSWORD}')")
    assert created.returncode == 0, created.stderr
    port = free_port()
    web = start([PYTHON, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port), "ldmsite.asgi:application"],
                env, tmp_path / "web.log")
    processes = {"web": web, "workers": []}

    def start_worker():
        worker = start([PYTHON, "manage.py", "rundramatiq", "--processes", "1", "--threads", "1"], env,
                       tmp_path / f"worker-{len(processes['workers'])}.log")
        processes["workers"].append(worker)
        return worker

    try:
        wait_for_port(port, timeout=90, process=web)
        yield {"url": f"http://127.0.0.1:{port}", "ws": f"ws://127.0.0.1:{port}", "start_worker": start_worker,
               "env": env, "logs": tmp_path}
    finally:
        for worker in processes["workers"]:
            kill_group(worker)
        stop(web)


def sign_in(base: str) -> requests.Session:
    session = requests.Session()
    session.get(base + "/accounts/login/")
    response = session.post(base + "/accounts/login/", data={
        "username": "erin", "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": base + "/accounts/login/"})
    assert response.ok and "sessionid" in session.cookies
    return session


def submit(session: requests.Session, base: str, **fields) -> int:
    data = {"model": "tiny", "prompt": "a red circle", "width": "32", "height": "32", "steps": "4",
            "guidance_scale": "5", "sampler": "Euler", "seed": "5", "num_images": "1", "eta": "0"}
    data.update({k: str(v) for k, v in fields.items()})
    response = session.post(base + "/generate/", data=data, headers={
        "Accept": "application/json", "X-CSRFToken": session.cookies["csrftoken"], "Referer": base + "/generate/"})
    assert response.status_code == 202, response.text
    return response.json()["job"]["job"]


async def follow(ws_base: str, session: requests.Session, job_id: int, until, timeout: float = 120):
    """Collect messages of one job's stream until `until(messages)` is true."""
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    messages = []
    async with websockets.connect(f"{ws_base}/ws/generations/{job_id}/", origin=ws_base.replace("ws", "http", 1),
                                  additional_headers={"Cookie": cookie}) as socket:
        deadline = time.monotonic() + timeout
        while not until(messages):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; got {[m['type'] for m in messages]}"
            messages.append(json.loads(await asyncio.wait_for(socket.recv(), remaining)))
    return messages


def job_state(session, base, job_id):
    return session.get(f"{base}/generations/{job_id}/", headers={"Accept": "application/json"}).json()


def test_a_worker_process_streams_previews_to_a_websocket_client_through_redis(stack):
    stack["start_worker"]()
    session = sign_in(stack["url"])
    job_id = submit(session, stack["url"], steps=6)
    messages = asyncio.run(follow(stack["ws"], session, job_id,
                                  lambda ms: any(m["type"] == "generation.succeeded" for m in ms)))
    assert messages[0]["type"] == "generation.snapshot"
    progress = [m for m in messages if m["type"] == "generation.progress"]
    assert progress and progress[-1]["step"] == 6
    assert all(m["preview"].startswith("data:image/webp;base64,") for m in progress)
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs)
    image = messages[-1]["images"][0]
    assert session.get(stack["url"] + image["url"]).headers["Content-Type"] == "image/png"


def test_a_worker_killed_mid_job_leaves_no_job_stuck_and_no_duplicate_images(stack):
    first_worker = stack["start_worker"]()
    session = sign_in(stack["url"])
    job_id = submit(session, stack["url"], steps=80, width=64, height=64, num_images=2)
    asyncio.run(follow(stack["ws"], session, job_id,
                       lambda ms: any(m["type"] == "generation.progress" for m in ms)))
    kill_group(first_worker)  # SIGKILL: no chance to clean up
    assert job_state(session, stack["url"], job_id)["status"] == "running"

    stack["start_worker"]()
    deadline = time.monotonic() + 240
    while (state := job_state(session, stack["url"], job_id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job stuck in {state['status']}"
        time.sleep(1)
    assert state["status"] == "succeeded", state
    assert len(state["images"]) == 2
    assert sorted(image["seed"] for image in state["images"]) == [5, 6], "each image stored once"
