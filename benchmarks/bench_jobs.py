"""Whole-stack job overhead and server memory in embedded mode (issue: generation jobs).

Starts the real server (daphne, embedded workers) on a free loopback port with a
fresh data directory, signs in, and runs N jobs one after another through the
page's JSON submit and the job's websocket. For each job it measures
submit → `generation.succeeded` as the client sees it, minus the engine's own
compute time (`timings.total` recorded by the engine), and reads the server's
resident memory (VmRSS) and peak (VmHWM) from /proc after jobs 10 and N.

    .venv/bin/python benchmarks/bench_jobs.py [--jobs 50] [--steps 4] [--model ldm-shapes]

Not part of the test suite's pass/fail; prints numbers for docs/PERFORMANCE.md.
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.conftest import PYTHON, free_port, manage, site_env, stop, wait_for_port  # noqa: E402

PASSWORD = "bench-password-8841"


def memory_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def run_job(base: str, ws_base: str, session: requests.Session, data: dict) -> tuple[float, dict]:
    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    async with websockets.connect(f"{ws_base}/ws/generations/", origin=base,
                                  additional_headers={"Cookie": cookie}) as socket:
        started = time.perf_counter()
        response = await asyncio.to_thread(session.post, base + "/generate/", data=data, headers={
            "Accept": "application/json", "X-CSRFToken": session.cookies["csrftoken"], "Referer": base + "/"})
        assert response.status_code == 202, response.text
        job_id = response.json()["job"]["job"]
        while True:
            message = json.loads(await socket.recv())
            if message.get("job") == job_id and message["type"] in ("generation.succeeded", "generation.failed"):
                elapsed = time.perf_counter() - started
                assert message["type"] == "generation.succeeded", message
                break
    state = session.get(f"{base}/generations/{job_id}/", headers={"Accept": "application/json"}).json()
    return elapsed, state["timings"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model", default="ldm-shapes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = site_env(Path(tmp) / "data")
        assert manage(env, "migrate", "--noinput").returncode == 0
        manage(env, "shell", "-c",
               f"from django.contrib.auth.models import User; User.objects.create_user('bench', 'b@x.org', '{PASSWORD}')")
        port = free_port()
        log = open(Path(tmp) / "server.log", "w")
        server = subprocess.Popen([PYTHON, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port),
                                   "ldmsite.asgi:application"], cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=90, process=server)
            base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
            session = requests.Session()
            session.get(base + "/accounts/login/")
            session.post(base + "/accounts/login/", data={"username": "bench", "password": PASSWORD,
                                                           "csrfmiddlewaretoken": session.cookies["csrftoken"]})
            data = {"model": args.model, "prompt": "a large red circle in the center on a blue background",
                    "steps": str(args.steps), "sampler": "DDIM", "seed": "1", "num_images": "1",
                    "width": "", "height": "", "guidance_scale": "", "eta": "0"}
            overheads, memory = [], {}
            for index in range(1, args.jobs + 1):
                data["seed"] = str(index)
                elapsed, timings = asyncio.run(run_job(base, ws_base, session, data))
                if index > 1:  # the first job includes the one-time model load
                    overheads.append(elapsed - timings["total"])
                if index in (10, args.jobs):
                    memory[index] = memory_mb(server.pid)
            overheads.sort()
            print(f"jobs: {args.jobs} ({args.steps} steps each, model {args.model}, embedded mode)")
            print(f"overhead per job (submit->succeeded minus engine compute): median "
                  f"{statistics.median(overheads) * 1000:.1f} ms, p95 {overheads[int(0.95 * (len(overheads) - 1))] * 1000:.1f} ms,"
                  f" max {overheads[-1] * 1000:.1f} ms")
            for index, (rss, peak) in memory.items():
                print(f"server memory after job {index}: RSS {rss:.0f} MB, peak {peak:.0f} MB")
            if 10 in memory and args.jobs in memory:
                print(f"RSS growth job 10 -> {args.jobs}: {memory[args.jobs][0] - memory[10][0]:+.1f} MB")
        finally:
            stop(server)
            log.close()


if __name__ == "__main__":
    main()
