"""Explore and search latency with 10,000 public images (issue: galleries).

Fills a fresh SQLite database with N public images (rows only: list pages render
thumbnail URLs, the files are separate requests), starts the real server
(daphne) on a free loopback port, and sends a bounded number of requests with
C concurrent clients to: the first explore page (newest), most liked, a deep
cursor page, and prompt searches. Prints median and p95 per kind.

    .venv/bin/python benchmarks/bench_explore.py [--images 10000] [--requests 200] [--concurrency 4]
"""

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.conftest import PYTHON, free_port, manage, site_env, stop, wait_for_port  # noqa: E402

FILL = """
import random
from django.contrib.auth.models import User
from gallery.models import Image
from generation.models import DiffusionModel
rng = random.Random(7)
model = DiffusionModel.objects.first()
owners = [User.objects.create_user(f"artist{{i}}", f"a{{i}}@x.org", "pw-bench-8841") for i in range(50)]
colors = "red orange yellow green blue purple white black".split()
shapes = "circle square triangle".split()
batch = []
for i in range({count}):
    prompt = f"a {{rng.choice(['small','large'])}} {{rng.choice(colors)}} {{rng.choice(shapes)}} on a {{rng.choice(colors)}} background"
    batch.append(Image(owner=owners[i % 50], file=f"images/00/{{i:032x}}.png", thumbnail=f"images/00/{{i:032x}}.webp",
                       width=64, height=64, seed=i, prompt=prompt, model=model, model_name="bench", sampler="DDIM",
                       visibility="public", saved=True, like_count=rng.randint(0, 50)))
    if len(batch) == 2000:
        Image.objects.bulk_create(batch); batch = []
Image.objects.bulk_create(batch)
print(Image.objects.count())
"""


def timed_get(session, url):
    started = time.perf_counter()
    response = session.get(url)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (url, response.status_code)
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="per kind of page")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = site_env(Path(tmp) / "data", LDM_WORKER_THREADS="0")
        assert manage(env, "migrate", "--noinput").returncode == 0
        filled = manage(env, "shell", "-c", FILL.format(count=args.images), timeout=600)
        assert filled.returncode == 0, filled.stderr
        port = free_port()
        server = subprocess.Popen([PYTHON, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port),
                                   "ldmsite.asgi:application"], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, timeout=90, process=server)
            base = f"http://127.0.0.1:{port}"
            first = requests.get(base + "/explore/").text
            cursor = first.split("cursor=")[1].split('"')[0] if "cursor=" in first else ""
            # Walk 20 pages deep for a realistic deep cursor.
            for _ in range(20):
                page = requests.get(f"{base}/explore/?cursor={cursor}").text
                cursor = page.split("cursor=")[1].split('"')[0]
            rng = random.Random(1)
            kinds = {
                "explore newest": lambda: f"{base}/explore/",
                "explore most liked": lambda: f"{base}/explore/?order=most_liked",
                "explore page 21 (cursor)": lambda: f"{base}/explore/?cursor={cursor}",
                "search one word": lambda: f"{base}/explore/?q={rng.choice(['circle', 'square', 'triangle'])}",
                "search three words": lambda: f"{base}/explore/?q=large+{rng.choice(['red', 'blue'])}+circle",
            }
            print(f"{args.images} public images, {args.requests} requests per kind, {args.concurrency} concurrent "
                  "clients, embedded mode (SQLite), daphne")
            sessions = [requests.Session() for _ in range(args.concurrency)]
            for name, make_url in kinds.items():
                urls = [make_url() for _ in range(args.requests)]
                with ThreadPoolExecutor(args.concurrency) as pool:
                    times = sorted(pool.map(lambda pair: timed_get(sessions[pair[0] % len(sessions)], pair[1]),
                                            enumerate(urls)))
                p95 = times[int(0.95 * (len(times) - 1))]
                print(f"  {name:26s} median {statistics.median(times) * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms")
        finally:
            stop(server)


if __name__ == "__main__":
    main()
