"""The web path against the engine alone, and server memory, in embedded mode (issue 28).

Starts the real server (daphne, embedded workers) on a free loopback port with a fresh data
directory, signs in, and runs N jobs one after another through the page's JSON submit and the
personal websocket: each job's wall time is submit -> `generation.succeeded` as the client sees it.
Beside it, in the same run, a standalone engine process (this script with ``--engine-alone``: a
plain Python process that calls ``generation.diffusion.generate()`` with no callbacks) runs the
same request -- the parameters the site stored for the job, the same model in the same precision
with the same torch threads as the server's worker (read from the first job's image metadata).
Site jobs and engine jobs alternate, one of each per round, so slow drifts of a shared machine hit
both; the first site job (the model load) and the first engine job are warm-ups.

It prints: site wall / engine-alone wall (median of rounds, and of the per-round ratios), the
engine's own per-step time inside the server / alone (``timings.denoise`` / steps), and the
server's resident memory (VmRSS) and peak (VmHWM) from /proc after every 10th job.

    .venv/bin/python benchmarks/bench_jobs.py [--jobs 50] [--steps N] [--sampler NAME] [--model ldm-shapes]

Defaults: the built-in model's own default job (steps and sampler left empty so the model's
defaults apply). Not part of the test suite's pass/fail; prints numbers for docs/PERFORMANCE.md.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSWORD = "bench-password-8841"
RECENT_JOBS_IN_SNAPSHOT = 20  # generation.consumers: the jobs a page load's snapshot holds

# What the bench asks the server for the job it must repeat alone (a manage.py shell one-liner).
JOB_RECORD = """
import json
from generation.models import Generation
job = Generation.objects.get(pk={job_id})
image = job.images.first()
print("JOB-RECORD " + json.dumps({{"params": job.params, "dtype": image.metadata["dtype"],
    "torch_threads": image.metadata["torch_threads"], "source": job.model.source,
    "clip_source": job.model.clip_source or None}}))
"""


def memory_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


# --- The standalone engine process --------------------------------------------------------------------

def engine_alone() -> None:
    """Reads one JSON line (the job record), loads the model, then for each line (a seed) runs the
    job and answers one JSON line: its wall time and the engine's timings. No Django here."""
    import torch

    from generation.diffusion import GenerationRequest, generate, load_pipeline

    record = json.loads(sys.stdin.readline())
    torch.set_num_threads(record["torch_threads"])
    source = record["source"]
    if not Path(source).is_absolute() and (REPO / source).exists():
        source = str(REPO / source)  # the built-in model: relative to the repository, as the worker resolves it
    model = load_pipeline(source, dtype=record["dtype"], clip_source=record["clip_source"])
    from benchmarks.machine import describe_machine

    print(json.dumps({"ready": True, "dtype": model.precision.dtype_name, "machine": describe_machine()}), flush=True)
    for line in sys.stdin:
        request = GenerationRequest.from_dict({**record["params"], "seed": int(line)})
        started = time.perf_counter()
        result = generate(model, request)
        wall = time.perf_counter() - started
        print(json.dumps({"wall": wall, "timings": result.timings, "steps": request.steps}), flush=True)


class EngineAlone:
    def __init__(self, record: dict):
        self.process = subprocess.Popen([sys.executable, __file__, "--engine-alone"], cwd=REPO, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.process.stdin.write(json.dumps(record) + "\n")
        self.process.stdin.flush()
        self.ready = json.loads(self.process.stdout.readline())

    def run(self, seed: int) -> dict:
        self.process.stdin.write(f"{seed}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


# --- The site --------------------------------------------------------------------------------------------

class Page:
    """What the generate page does: one personal websocket, opened at page load and held, and a
    JSON submit per job; a job's wall time is submit -> `generation.succeeded` on that socket."""

    def __init__(self, base: str, ws_base: str, session):
        self.base, self.ws_base, self.session = base, ws_base, session

    def cookie(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.session.cookies.items())

    def connect(self):
        import websockets

        return websockets.connect(f"{self.ws_base}/ws/generations/", origin=self.base,
                                  additional_headers={"Cookie": self.cookie()})

    async def run_job(self, socket, data: dict) -> tuple[float, int, dict]:
        started = time.perf_counter()
        response = await asyncio.to_thread(self.session.post, self.base + "/generate/", data=data, headers={
            "Accept": "application/json", "X-CSRFToken": self.session.cookies["csrftoken"],
            "Referer": self.base + "/"})
        assert response.status_code == 202, response.text
        job_id = response.json()["job"]["job"]
        while True:
            message = json.loads(await socket.recv())
            if message.get("job") == job_id and message["type"] in ("generation.succeeded", "generation.failed"):
                elapsed = time.perf_counter() - started
                assert message["type"] == "generation.succeeded", message
                break
        state = await asyncio.to_thread(self.session.get, f"{self.base}/generations/{job_id}/",
                                        headers={"Accept": "application/json"})
        return elapsed, job_id, state.json()["timings"]

    async def open_and_close(self, snapshots: int) -> None:
        """A page load: connect, receive the snapshots of the recent jobs, leave."""
        async with self.connect() as socket:
            for _ in range(snapshots):
                await socket.recv()


async def run_site(page: Page, data: dict, jobs: int, make_engine, server_pid: int, connections: int) -> dict:
    async with page.connect() as socket:
        data["seed"] = "1"
        _, first_job, _ = await page.run_job(socket, data)  # loads the model
        engine = await asyncio.to_thread(make_engine, first_job)
        await asyncio.to_thread(engine.run, 1)  # warm-up, as the site's first job
        rounds, memory = [], {}
        for index in range(2, jobs + 1):
            data["seed"] = str(index)
            site_wall, _, site_timings = await page.run_job(socket, data)
            alone = await asyncio.to_thread(engine.run, index)
            rounds.append((site_wall, site_timings, alone))
            if index % 10 == 0 or index == jobs:
                memory[index] = memory_mb(server_pid)
    # Page loads without jobs: a connection's snapshot, then it closes (memory must not keep them).
    connection_memory = {0: memory_mb(server_pid)}
    for index in range(1, connections + 1):
        await page.open_and_close(min(jobs, RECENT_JOBS_IN_SNAPSHOT))
        if index % 50 == 0 or index == connections:
            connection_memory[index] = memory_mb(server_pid)
    return {"engine": engine, "rounds": rounds, "memory": memory, "connection_memory": connection_memory}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--connections", type=int, default=200, help="page loads (connect, snapshot, close) after the jobs")
    parser.add_argument("--steps", default="", help="empty: the model's default")
    parser.add_argument("--sampler", default="", help="empty: the model's default")
    parser.add_argument("--model", default="ldm-shapes")
    parser.add_argument("--engine-alone", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_alone:
        return engine_alone()

    import requests

    from tests.conftest import PYTHON, free_port, manage, site_env, stop, wait_for_port

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
        records = []

        def make_engine(job_id: int) -> EngineAlone:
            shell = manage(env, "shell", "-c", JOB_RECORD.format(job_id=job_id))
            [line] = [line for line in shell.stdout.splitlines() if line.startswith("JOB-RECORD ")]
            records.append(json.loads(line.split(" ", 1)[1]))
            return EngineAlone(records[0])

        outcome = None
        try:
            wait_for_port(port, timeout=90, process=server)
            base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
            session = requests.Session()
            session.get(base + "/accounts/login/")
            session.post(base + "/accounts/login/", data={"username": "bench", "password": PASSWORD,
                                                           "csrfmiddlewaretoken": session.cookies["csrftoken"]})
            data = {"model": args.model, "prompt": "a large red circle in the center on a blue background",
                    "steps": args.steps, "sampler": args.sampler, "num_images": "1",
                    "width": "", "height": "", "guidance_scale": ""}
            outcome = asyncio.run(run_site(Page(base, ws_base, session), data, args.jobs, make_engine, server.pid,
                                           args.connections))
        finally:
            if outcome is not None:
                outcome["engine"].close()
            stop(server)
            log.close()
    report(args, records[0], outcome)


def report(args, record: dict, outcome: dict) -> None:
    engine, rounds, memory = outcome["engine"], outcome["rounds"], outcome["memory"]
    site_walls = [site for site, _, _ in rounds]
    engine_walls = [alone["wall"] for _, _, alone in rounds]
    ratios = [site / alone["wall"] for site, _, alone in rounds]
    site_engine = [timings["total"] for _, timings, _ in rounds]  # the engine's own timings.total in the server
    alone_engine = [alone["timings"]["total"] for _, _, alone in rounds]
    site_steps = [timings["denoise"] / alone["steps"] for _, timings, alone in rounds]
    engine_steps = [alone["timings"]["denoise"] / alone["steps"] for _, _, alone in rounds]
    params = record["params"]
    print(f"machine (as the engine-alone process sees it): {engine.ready['machine']}")
    print(f"jobs: {args.jobs} through the site (embedded mode, one websocket held as the generate page does), "
          f"model {args.model}: {params['steps']} steps of {params['sampler']}, {params['width']}x{params['height']}, "
          f"guidance {params['guidance_scale']}, autoguidance {params.get('autoguidance_scale')}; {record['dtype']}, "
          f"{record['torch_threads']} torch thread(s) in the server and alone")
    print(f"site wall (submit -> succeeded on the websocket): median {statistics.median(site_walls):.3f} s, "
          f"p95 {percentile(site_walls, 0.95):.3f} s")
    print(f"engine alone (generate() in a plain process):     median {statistics.median(engine_walls):.3f} s, "
          f"p95 {percentile(engine_walls, 0.95):.3f} s")
    print(f"site / engine alone: {statistics.median(site_walls) / statistics.median(engine_walls):.3f} "
          f"(ratio of medians), {statistics.median(ratios):.3f} (median of per-round ratios)")
    outside = [wall - engine_total for wall, engine_total in zip(site_walls, site_engine)]
    print(f"engine's timings.total: in the server {statistics.median(site_engine):.3f} s, alone "
          f"{statistics.median(alone_engine):.3f} s; site wall outside the engine (submit, queue, storing, "
          f"events): median {statistics.median(outside) * 1000:.0f} ms")
    print(f"engine per step (timings.denoise / steps): in the server {statistics.median(site_steps) * 1000:.2f} ms,"
          f" alone {statistics.median(engine_steps) * 1000:.2f} ms, "
          f"ratio {statistics.median(site_steps) / statistics.median(engine_steps):.3f}")
    print("server memory over the jobs (RSS / peak) after job " + ", ".join(
        f"{index}: {rss:.0f} / {peak:.0f} MB" for index, (rss, peak) in memory.items()))
    if 10 in memory and args.jobs in memory:
        print(f"RSS growth job 10 -> {args.jobs}: {memory[args.jobs][0] - memory[10][0]:+.1f} MB")
    connections = outcome["connection_memory"]
    if len(connections) > 1:
        print("server memory over page loads (connect, snapshot, close; RSS) after " + ", ".join(
            f"{index}: {rss:.1f} MB" for index, (rss, _) in connections.items()))
        last = max(connections)
        first = min((index for index in connections if index > 0), default=last)
        print(f"RSS growth page load {first} -> {last}: {connections[last][0] - connections[first][0]:+.1f} MB")


if __name__ == "__main__":
    main()
