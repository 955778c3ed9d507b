"""Batching across people through the real site: throughput under load, latency at low load (issue 28).

Starts two real servers (daphne, embedded worker, each its own fresh data directory) in one run:
one with ``LDM_MAX_BATCH=1`` (one job at a time, as before batching) and one with batching
(``LDM_MAX_BATCH``, default 8, and ``LDM_BATCH_WINDOW_MS`` as configured). Only one of them works
at any moment; their phases alternate, so slow drifts of a shared machine hit both.

- **Throughput**: 8 people (8 accounts, each its own session and websocket) submit one job each at
  the same moment; the round's time runs from the first submit to the last ``generation.succeeded``
  a client sees. images/s = 8 / that time (median of rounds).
- **Low load**: one person submits a job, waits for it, submits the next; the wait of a job is
  submit -> ``generation.succeeded`` on its websocket (what a person waits). p95 and median.

    .venv/bin/python benchmarks/bench_batching.py [--rounds 4] [--low-load-jobs 20] [--max-batch 8]

Defaults: the built-in model's own default job (25 steps Euler Karras, 64x64, guidance 1.5,
autoguidance 1.0). Not part of the test suite's pass/fail; prints numbers for docs/PERFORMANCE.md.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_jobs import Page, percentile  # noqa: E402  (the same client as bench_jobs)

PASSWORD = "bench-password-8841"
PEOPLE = 8
PROMPTS = ("a large red circle in the center on a blue background", "a small green square on a white background",
           "a blue triangle on a black background", "a yellow circle on a red background",
           "a large white square on a green background", "a red triangle on a yellow background",
           "a small black circle on a white background", "a green circle on a blue background")


BATCH_SIZES = """
from collections import Counter
from gallery.models import Image
sizes = Counter((image.metadata.get("batch") or {}).get("requests", 1) for image in Image.objects.all())
print(*(f"batch of {size}: {count} jobs;" for size, count in sorted(sizes.items())))
"""


class Site:
    """One real server in embedded mode with `PEOPLE` signed-in accounts."""

    def __init__(self, tmp: Path, name: str, **settings: str):
        import requests

        from tests.conftest import PYTHON, free_port, manage, site_env, wait_for_port

        self.name = name
        self.env = env = site_env(tmp / name, **settings)
        assert manage(env, "migrate", "--noinput").returncode == 0
        manage(env, "shell", "-c", "from django.contrib.auth.models import User\n" + "\n".join(
            f"User.objects.create_user('person{i}', 'p{i}@x.org', '{PASSWORD}')" for i in range(PEOPLE)))
        port = free_port()
        self.log = open(tmp / f"{name}.log", "w")
        self.server = subprocess.Popen([PYTHON, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port),
                                        "ldmsite.asgi:application"], cwd=REPO, env=env, stdout=self.log,
                                       stderr=subprocess.STDOUT)
        wait_for_port(port, timeout=90, process=self.server)
        self.base, self.ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
        self.sessions = []
        for i in range(PEOPLE):
            session = requests.Session()
            session.get(self.base + "/accounts/login/")
            session.post(self.base + "/accounts/login/", data={
                "username": f"person{i}", "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]})
            self.sessions.append(session)

    def form(self, person: int, seed: int) -> dict:
        return {"model": "ldm-shapes", "prompt": PROMPTS[person % len(PROMPTS)], "steps": "", "sampler": "",
                "seed": str(seed), "num_images": "1", "width": "", "height": "", "guidance_scale": ""}

    async def job(self, person: int, seed: int) -> float:
        """One person's job as their generate page runs it (`bench_jobs.Page`): the page's socket
        is open before the submit; the wall time is submit -> `generation.succeeded`."""
        page = Page(self.base, self.ws_base, self.sessions[person])
        async with page.connect() as socket:
            wall, _, _ = await page.run_job(socket, self.form(person, seed))
        return wall

    def one_job(self, seed: int) -> float:
        return asyncio.run(self.job(0, seed))

    def everyone_at_once(self, seed: int) -> float:
        async def round_():
            started = time.perf_counter()
            await asyncio.gather(*(self.job(i, seed + i) for i in range(PEOPLE)))
            return time.perf_counter() - started

        return asyncio.run(round_())

    def batch_sizes(self) -> str:
        """How the jobs were batched: jobs by the number of requests in their batch."""
        from tests.conftest import manage

        shell = manage(self.env, "shell", "-c", BATCH_SIZES)
        return " ".join(line for line in shell.stdout.splitlines() if line.startswith("batch of"))

    def close(self):
        from tests.conftest import stop

        stop(self.server)
        self.log.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4, help="rounds of 8 simultaneous jobs per setting")
    parser.add_argument("--low-load-jobs", type=int, default=20, help="one-at-a-time jobs per setting")
    parser.add_argument("--max-batch", default=os.environ.get("LDM_MAX_BATCH", "8"))
    args = parser.parse_args()

    from benchmarks.machine import describe_machine

    with tempfile.TemporaryDirectory() as tmp:
        sites = []
        try:
            sites = [Site(Path(tmp), "one-at-a-time", LDM_MAX_BATCH="1"),
                     Site(Path(tmp), "batching", LDM_MAX_BATCH=str(args.max_batch))]
            for site in sites:  # warm-up: the model load, the first batch of each shape
                site.one_job(1)
                site.everyone_at_once(100)
            throughput = {site.name: [] for site in sites}
            waits = {site.name: [] for site in sites}
            per_round = max(1, args.low_load_jobs // args.rounds)
            for round_ in range(args.rounds):
                for site in sites:
                    throughput[site.name].append(PEOPLE / site.everyone_at_once(1000 + 10 * round_))
                for site in sites:
                    waits[site.name] += [site.one_job(5000 + 100 * round_ + i) for i in range(per_round)]
            print(f"machine: {describe_machine()}")
            print(f"built-in model's default job through the site (embedded mode, daphne, 1 worker thread); "
                  f"LDM_BATCH_WINDOW_MS={os.environ.get('LDM_BATCH_WINDOW_MS', 'default')}, "
                  f"batching: LDM_MAX_BATCH={args.max_batch}")
            for site in sites:
                rates = throughput[site.name]
                print(f"{site.name:>14}: {PEOPLE} people at once: {statistics.median(rates):.2f} images/s "
                      f"(median of {len(rates)} rounds; {', '.join(f'{r:.2f}' for r in rates)}); "
                      f"one person alone: wait median {statistics.median(waits[site.name]):.3f} s, "
                      f"p95 {percentile(waits[site.name], 0.95):.3f} s ({len(waits[site.name])} jobs)")
            print(f"jobs by the size of the batch they ran in (all phases, warm-ups included): "
                  f"{sites[1].batch_sizes()}")
            one, batched = sites[0].name, sites[1].name
            print(f"throughput, batching / one at a time: "
                  f"{statistics.median(throughput[batched]) / statistics.median(throughput[one]):.2f}x")
            print(f"low-load p95 wait, batching / one at a time: "
                  f"{percentile(waits[batched], 0.95) / percentile(waits[one], 0.95):.3f} "
                  f"(median {statistics.median(waits[batched]) / statistics.median(waits[one]):.3f})")
        finally:
            for site in sites:
                site.close()


if __name__ == "__main__":
    main()
