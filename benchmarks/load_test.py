"""Bounded load test of the scale-out stack on loopback (issue: scale-out).

Starts PostgreSQL, Redis, daphne and two `rundramatiq` workers (tests/scale_out/harness.py) with
a tiny seeded model, then runs C concurrent signed-in clients for a fixed time. Each client
browses Explore (newest, most liked, searches) and now and then submits a small job. Stops by
itself after --seconds (and at most --max-requests requests), then waits for every submitted job
to reach a final state. Prints latency percentiles per request kind, the count of 5xx answers
and of jobs not in a final state ("lost").

    .venv/bin/python benchmarks/load_test.py [--clients 50] [--seconds 60] [--job-every 15]
"""

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.generation.diffusion.tiny import build_tiny_pipeline  # noqa: E402
from tests.scale_out.harness import build_stack  # noqa: E402


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * (len(values) - 1)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--job-every", type=int, default=15, help="a client submits a job every N requests")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_pipeline(root / "tiny", with_clip=False)
        stack = build_stack(root, model_dir, LDM_MAX_ACTIVE_JOBS="5")
        try:
            stack.start_worker()
            stack.start_worker()
            names = [f"load{i}" for i in range(args.clients)]
            script = "; ".join(f"User.objects.create_user('{n}', '{n}@x.org', 'violet-lantern-4821')" for n in names)
            assert stack.manage("shell", "-c", "from django.contrib.auth.models import User; " + script).returncode == 0
            sessions = [stack.sign_in(n) for n in names]

            latencies = defaultdict(list)
            statuses = defaultdict(int)
            jobs: list[tuple[int, int]] = []
            lock = threading.Lock()
            budget = [args.max_requests]
            deadline = time.monotonic() + args.seconds

            def client(index):
                rng = random.Random(index)
                session = sessions[index]
                count = 0
                while time.monotonic() < deadline:
                    with lock:
                        if budget[0] <= 0:
                            return
                        budget[0] -= 1
                    count += 1
                    started = time.perf_counter()
                    if count % args.job_every == 0:
                        kind = "submit job"
                        response = session.post(stack.url + "/generate/", data={
                            "model": "tiny", "prompt": "a red circle", "width": "32", "height": "32", "steps": "3",
                            "sampler": "Euler", "seed": str(count), "num_images": "1", "guidance_scale": "5",
                            "eta": "0"}, headers={"Accept": "application/json",
                                                  "X-CSRFToken": session.cookies["csrftoken"],
                                                  "Referer": stack.url + "/generate/"})
                        if response.status_code == 202:
                            with lock:
                                jobs.append((index, response.json()["job"]["job"]))
                    else:
                        kind, url = rng.choice([
                            ("explore newest", "/explore/"), ("explore most liked", "/explore/?order=most_liked"),
                            ("search", f"/explore/?q={rng.choice(['red', 'circle', 'blue square'])}"),
                            ("my images", "/images/")])
                        response = session.get(stack.url + url)
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies[kind].append(elapsed)
                        statuses[response.status_code] += 1

            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            began = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            duration = time.monotonic() - began

            final = {}
            for index, job_id in jobs:
                final[job_id] = None
            settle_deadline = time.monotonic() + 600
            pending = dict(jobs_by_owner(jobs))
            while pending and time.monotonic() < settle_deadline:
                for index in list(pending):
                    remaining = []
                    for job_id in pending[index]:
                        state = stack.job(sessions[index], job_id)
                        if state["status"] in ("queued", "running"):
                            remaining.append(job_id)
                        else:
                            final[job_id] = state["status"]
                    if remaining:
                        pending[index] = remaining
                    else:
                        del pending[index]
                time.sleep(1)

            total = sum(statuses.values())
            print(f"{args.clients} clients for {duration:.0f} s against PostgreSQL + Redis + daphne + 2 workers "
                  f"(loopback): {total} requests, {total / duration:.0f} req/s")
            print("status codes: " + ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items())))
            print(f"5xx answers: {sum(n for code, n in statuses.items() if code >= 500)}")
            for kind, values in sorted(latencies.items()):
                print(f"  {kind:20s} n={len(values):5d}  median {statistics.median(values) * 1000:7.1f} ms  "
                      f"p95 {percentile(values, 0.95) * 1000:7.1f} ms  p99 {percentile(values, 0.99) * 1000:7.1f} ms")
            outcome = defaultdict(int)
            for status in final.values():
                outcome[status or "not final (lost)"] += 1
            print("jobs: " + ", ".join(f"{status}: {n}" for status, n in sorted(outcome.items())))
        finally:
            stack.stop()


def jobs_by_owner(jobs):
    owners = defaultdict(list)
    for index, job_id in jobs:
        owners[index].append(job_id)
    return owners


if __name__ == "__main__":
    main()
