"""Does any request freeze the server? (issue 24: no request may freeze the server)

Starts the real server (daphne on loopback, embedded mode: the web process also runs the
embedded worker threads and the recovery loop, as `make run` does) with a fresh database. Then,
for each parser that reads client text, one client sends the worst input found for it over and
over while a second client times GET /healthz every --interval seconds. The baseline is the same
probe with no hostile client, in the same run. Prints, per parser: the hostile requests sent and
their median time and answers, /healthz's median, p99 and max latency, and how much the server's
peak memory (VmHWM) grew. Target: /healthz within 1 s on 2 cores.

    .venv/bin/python benchmarks/bench_hostile_input.py [--seconds 6] [--interval 0.02]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import requests
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.conftest import PYTHON, free_port, manage, site_env, stop, wait_for_port  # noqa: E402

PASSWORD = "violet-lantern-4821"
SETUP = f"""
from django.contrib.auth.models import User
from gallery.models import BlocklistEntry
from ldmsite.accounts.tokens import create_token
user = User.objects.create_user("hostile", "hostile@example.com", "{PASSWORD}")
# Blocklist entries saved by hand, past the save-time probe: catastrophic on a run of "a"s (each
# search runs into its timeout), tried before the plain term.
for pattern, kind in [(r"(?:a|aa)*\\d", "regex"), (r"(a|aa)*(?=b)", "regex"), ("forbidden words", "term")]:
    BlocklistEntry.objects.create(pattern=pattern, kind=kind, check_negative_prompt=True)
print(create_token(user, "bench", ["read", "generate", "write"])[1])
"""


def png(parameters: str | None = None, size=(8, 8)) -> bytes:
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    PILImage.new("RGB", size).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def huge_rgba_png(side: int = 13000) -> bytes:
    """A real side x side RGBA PNG (all transparent, ~3 MB): decoding it takes side² x 4 bytes."""
    compressor = zlib.compressobj(1)
    row = b"\0" * (side * 4 + 1)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 6, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"tEXt", b"parameters\0a cat\nSteps: 20, Seed: 5, Size: 512x512")
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def peak_memory_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * (len(values) - 1)))]


def hostile_cases(url: str, session: requests.Session, token: str):
    """(name, one request) for the worst input found for each parser."""
    api = {"Authorization": f"Bearer {token}"}
    form = {"X-CSRFToken": session.cookies["csrftoken"], "Referer": url + "/generate/"}
    probe_line = png("x\n" + "a" * 40_000)  # the outside probe's input: 28.7 s before the fix
    long_text = png("x\n" + "a" * 19_000_000)  # under the 20 MB upload limit
    big = huge_rgba_png()
    numbers = {"prompt": "a" * 1000, "guidance_scale": 10 ** 4000, "eta": 10 ** 4000, "autoguidance_scale": -10 ** 4000,
               "width": "9" * 200_000, "height": "²" * 200_000, "steps": " " * 200_000 + "1", "seed": "1e" + "9" * 100_000}
    flat = b"[" + b"1," * 15_000_000 + b"1]"  # 30 MB within the depth limit: the decoder's own cost

    def import_png(data: bytes):
        return lambda: session.post(url + "/generate/import-png/", files={"file": ("x.png", data, "image/png")},
                                    headers=form)

    return [
        ("PNG import: parameters 'x\\n' + 40,000 x 'a' (the probe's)", import_png(probe_line)),
        ("PNG import: a 19 MB parameters text", import_png(long_text)),
        ("PNG import: a 13000x13000 RGBA PNG", import_png(big)),
        ("A1111 png-info: the probe's PNG, base64", lambda: requests.post(
            url + "/sdapi/v1/png-info", json={"image": base64.b64encode(probe_line).decode()}, headers=api)),
        ("A1111 options: checkpoint 'a' + 80,000 spaces + 'b'", lambda: requests.post(
            url + "/sdapi/v1/options", json={"sd_model_checkpoint": "a" + " " * 80_000 + "b"}, headers=api)),
        ("search: a 15,000-character query (explore page)", lambda: session.get(
            url + "/explore/", params={"q": "a " * 7_500})),
        ("search: a 15,000-character word (API image list)", lambda: requests.get(
            url + "/api/v1/images/", params={"q": "a" * 15_000}, headers=api)),
        ("blocklist: a 1000-character prompt vs catastrophic entries", lambda: requests.post(
            url + "/api/v1/generations/", json={"prompt": "a" * 1000, "negative_prompt": "a " * 500}, headers=api)),
        ("request validator: 4000-digit and 200,000-character numbers", lambda: requests.post(
            url + "/api/v1/generations/", data=json.dumps(numbers), headers={**api, "Content-Type": "application/json"})),
        ("JSON parser: 100,000 '[' deep", lambda: requests.post(
            url + "/api/v1/generations/", data=b"[" * 100_000, headers={**api, "Content-Type": "application/json"})),
        ("JSON parser: a 30 MB flat list", lambda: requests.post(
            url + "/api/v1/generations/", data=flat, headers={**api, "Content-Type": "application/json"})),
        ("form ids: add-to-album, 1000 ids of 2,000 characters", lambda: session.post(
            url + "/images/add-to-album/", data={"images": ["9" * 2_000] * 1_000, "album": "new"},
            headers={**form, "Accept": "application/json"})),
        ("generate page: 200,000-character numbers", lambda: session.post(
            url + "/generate/", data={"prompt": "a red circle", "width": "9" * 200_000, "steps": "²" * 200_000,
                                      "guidance_scale": "1" * 200_000}, headers={**form, "Accept": "application/json"})),
    ]


def attack(hostile, stop_event, results) -> None:
    """The hostile client (its own process, so its work never delays the probe's): send `hostile`
    over and over until told to stop; report each request's time and answer."""
    times, answers = [], {}
    while not stop_event.is_set():
        started = time.perf_counter()
        try:
            status = hostile().status_code
        except requests.RequestException as error:
            status = type(error).__name__
        times.append(time.perf_counter() - started)
        answers[status] = answers.get(status, 0) + 1
    results.put((times, answers))


def measure(url: str, seconds: float, interval: float, hostile=None) -> dict:
    """Probe /healthz for `seconds` while `hostile` (if any) is sent over and over."""
    context = multiprocessing.get_context("fork")  # the hostile request (a closure) goes along as it is
    stop_event, results = context.Event(), context.Queue()
    attacker = context.Process(target=attack, args=(hostile, stop_event, results), daemon=True) if hostile else None
    if attacker:
        attacker.start()
        time.sleep(min(1.0, seconds / 4))  # let the first hostile request reach the server
    latencies, failures = [], 0
    probe = requests.Session()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            ok = probe.get(url + "/healthz", timeout=30).status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append(time.perf_counter() - started)
        failures += not ok
        time.sleep(interval)
    hostile_times, answers = [], {}
    if attacker:
        stop_event.set()
        hostile_times, answers = results.get(timeout=300)
        attacker.join(timeout=60)
    return {"latencies": latencies, "failures": failures, "hostile": hostile_times, "answers": answers}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0, help="probe time per parser")
    parser.add_argument("--interval", type=float, default=0.02, help="pause between two /healthz probes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "site"
        # No throttling and no job limits: every hostile request must reach its parser.
        env = site_env(data_dir, LDM_API_RATE="1000000/min", LDM_API_GENERATE_RATE="1000000/min",
                       LDM_MAX_ACTIVE_JOBS="10000", LDM_DAILY_IMAGE_QUOTA="0")
        migrated = manage(env, "migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stderr
        made = manage(env, "shell", "-c", SETUP)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip().splitlines()[-1]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "daphne.log", "w")
        server = subprocess.Popen([PYTHON, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port),
                                   "ldmsite.asgi:application"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=60, process=server)
            session = requests.Session()
            session.get(url + "/accounts/login/")
            session.post(url + "/accounts/login/", data={"username": "hostile", "password": PASSWORD,
                                                         "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                         headers={"Referer": url + "/accounts/login/"})
            assert "sessionid" in session.cookies, "could not sign in"
            cases = hostile_cases(url, session, token)
            measure(url, 1.0, args.interval)  # warm up

            print(f"machine: {platform.node()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
                  f"Python {platform.python_version()}; {args.seconds:g} s per row, a /healthz probe every "
                  f"{args.interval * 1000:g} ms")
            print(f"{'hostile input':62} {'sent':>5} {'median s':>9} {'answers':18} "
                  f"{'healthz median':>14} {'p99':>7} {'max':>7} {'peak MB +':>9}")
            rows = [("(baseline: no hostile client)", None)] + cases
            worst = 0.0
            for name, hostile in rows:
                before = peak_memory_kb(server.pid)
                result = measure(url, args.seconds, args.interval, hostile)
                grown = (peak_memory_kb(server.pid) - before) / 1024
                latencies = result["latencies"]
                sent = len(result["hostile"])
                median_hostile = f"{statistics.median(result['hostile']):.3f}" if sent else "-"
                answers = ",".join(f"{status}x{count}" for status, count in sorted(result["answers"].items(),
                                                                                   key=str)) or "-"
                worst = max(worst, max(latencies))
                print(f"{name:62} {sent:>5} {median_hostile:>9} {answers:18} {statistics.median(latencies):>14.4f} "
                      f"{percentile(latencies, 0.99):>7.4f} {max(latencies):>7.4f} {grown:>9.0f}"
                      + (f"  ({result['failures']} probes failed)" if result["failures"] else ""))
            print(f"worst /healthz latency: {worst:.3f} s (target: under 1 s)")
        finally:
            stop(server)
            log.close()


if __name__ == "__main__":
    main()
