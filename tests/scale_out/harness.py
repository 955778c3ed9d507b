"""A full scale-out stack on loopback, started by the tests themselves: PostgreSQL (Debian's
server on a temporary data directory), redis-server, daphne and any number of
`rundramatiq` worker processes. Every service can be killed and restarted."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import PYTHON, REPO, free_port, manage, site_env, wait_for_port

PASSWORD = "violet-lantern-4821"


def as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; tests run as root in CI."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed; `make test` installs it (Debian package postgresql)")
    return Path(found[-1]).parent


def kill_group(process: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class Stack:
    root: Path
    env: dict = field(default_factory=dict)
    processes: dict = field(default_factory=dict)
    workers: list = field(default_factory=list)
    pg_dir: str = ""
    pg_port: int = 0
    redis_port: int = 0
    web_port: int = 0

    # --- services ---------------------------------------------------------------------
    def spawn(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "a")
        # Own process group: a kill reaches the command and everything it forked.
        return subprocess.Popen(args, cwd=REPO, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_postgres(self) -> None:
        bindir = postgres_bin()
        self.pg_dir = tempfile.mkdtemp(prefix="ldm-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.pg_dir, "postgres", "postgres")
        subprocess.run(as_postgres([str(bindir / "initdb"), "-D", self.pg_dir, "-A", "trust", "-U", "ldm",
                                    "--no-sync"]), check=True, capture_output=True)
        self.pg_port = free_port()
        self.processes["postgres"] = self.spawn("postgres", as_postgres([
            str(bindir / "postgres"), "-D", self.pg_dir, "-p", str(self.pg_port), "-k", self.pg_dir,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]), env=os.environ.copy())
        wait_for_port(self.pg_port, timeout=30, process=self.processes["postgres"])
        for _ in range(50):
            created = subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U",
                                      "ldm", "ldmsite"], capture_output=True, text=True)
            if created.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(created.stderr)

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; `make test` installs it (Debian package redis-server)")
        self.redis_port = self.redis_port or free_port()
        self.processes["redis"] = self.spawn("redis", [
            binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.root)])
        wait_for_port(self.redis_port, timeout=20, process=self.processes["redis"])

    def stop_redis(self) -> None:
        kill_group(self.processes["redis"])

    def restart_redis(self) -> None:
        self.stop_redis()
        self.start_redis()

    def start_web(self) -> None:
        self.web_port = self.web_port or free_port()
        self.processes["web"] = self.spawn("web", [PYTHON, "-m", "daphne", "--bind", "127.0.0.1", "--port",
                                                   str(self.web_port), "ldmsite.asgi:application"])
        wait_for_port(self.web_port, timeout=90, process=self.processes["web"])

    def restart_web(self) -> None:
        kill_group(self.processes["web"], signal.SIGTERM)
        self.start_web()

    def start_worker(self, *extra: str) -> subprocess.Popen:
        worker = self.spawn(f"worker-{len(self.workers)}", [PYTHON, "manage.py", "rundramatiq", "--processes", "1",
                                                            "--threads", "1", *extra])
        self.workers.append(worker)
        return worker

    def worker_running(self, job_id: int) -> subprocess.Popen:
        """The worker command whose process group holds the process recorded on the job."""
        recorded = self.manage("shell", "-c", "from generation.models import Generation; "
                               f"print(Generation.objects.get(pk={job_id}).worker)").stdout.strip()
        pid = recorded.split(":")[1].split("/")[0]
        for worker in self.workers:
            group = subprocess.run(["pgrep", "-g", str(worker.pid)], capture_output=True, text=True).stdout.split()
            if pid in group:
                return worker
        raise AssertionError(f"no worker process {pid} ({recorded})")

    def stop(self) -> None:
        for worker in self.workers:
            kill_group(worker)
        for name in ("web", "redis", "postgres"):
            if name in self.processes:
                kill_group(self.processes[name], signal.SIGTERM if name == "postgres" else signal.SIGKILL)
        if self.pg_dir:
            shutil.rmtree(self.pg_dir, ignore_errors=True)

    def query(self, sql: str, params=()) -> list[tuple]:
        """Rows straight from the stack's PostgreSQL: one consistent snapshot, in milliseconds."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.pg_port, user="ldm", dbname="ldmsite") as connection:
            return connection.execute(sql, params).fetchall()

    def job_statuses(self) -> dict[int, str]:
        return dict(self.query("SELECT id, status FROM generation_generation"))

    # --- clients ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}"

    def manage(self, *args: str, timeout: float = 180):
        return manage(self.env, *args, timeout=timeout)

    def create_user(self, username: str) -> None:
        result = self.manage("shell", "-c", "from django.contrib.auth.models import User; "
                             f"User.objects.create_user('{username}', '{username}@example.com', '{PASSWORD}')")
        assert result.returncode == 0, result.stderr

    def sign_in(self, username: str) -> requests.Session:
        session = requests.Session()
        session.get(self.url + "/accounts/login/")
        response = session.post(self.url + "/accounts/login/", data={
            "username": username, "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            headers={"Referer": self.url + "/accounts/login/"})
        assert response.ok and "sessionid" in session.cookies, response.text[:500]
        return session

    def sign_in_as_new(self, username: str) -> requests.Session:
        self.create_user(username)
        return self.sign_in(username)

    def submit(self, session: requests.Session, **fields) -> int:
        data = {"model": "tiny", "prompt": "a red circle", "width": "32", "height": "32", "steps": "4",
                "guidance_scale": "5", "sampler": "Euler", "seed": "5", "num_images": "1", "eta": "0"}
        data.update({k: str(v) for k, v in fields.items()})
        response = session.post(self.url + "/generate/", data=data, headers={
            "Accept": "application/json", "X-CSRFToken": session.cookies["csrftoken"],
            "Referer": self.url + "/generate/"})
        assert response.status_code == 202, response.text
        return response.json()["job"]["job"]

    def job(self, session: requests.Session, job_id: int) -> dict:
        return session.get(f"{self.url}/generations/{job_id}/", headers={"Accept": "application/json"}).json()

    def wait_until_final(self, session, job_ids, timeout: float = 300) -> dict[int, dict]:
        deadline = time.monotonic() + timeout
        states = {}
        pending = set(job_ids)
        while pending:
            assert time.monotonic() < deadline, f"jobs still active: {sorted(pending)} " \
                                                f"({[states.get(j, {}).get('status') for j in pending]})"
            for job_id in list(pending):
                try:
                    states[job_id] = self.job(session, job_id)
                except (requests.ConnectionError, ValueError):
                    break  # the web tier is restarting
                if states[job_id]["status"] not in ("queued", "running"):
                    pending.discard(job_id)
            time.sleep(0.5)
        return states


def build_stack(root: Path, model_dir: Path, **settings: str) -> Stack:
    stack = Stack(root=root)
    try:
        stack.start_postgres()
        stack.start_redis()
        stack.env = site_env(root / "data", DATABASE_URL=f"postgres://ldm@127.0.0.1:{stack.pg_port}/ldmsite",
                             REDIS_URL=f"redis://127.0.0.1:{stack.redis_port}/0", SECRET_KEY="scale-out-" + "s" * 50,
                             LDM_PRECISION="fp32", **settings)
        migrated = stack.manage("migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stderr
        added = stack.manage("add_model", str(model_dir), "--name", "Tiny", "--slug", "tiny", "--default")
        assert added.returncode == 0, added.stderr
        stack.start_web()
    except BaseException:
        stack.stop()
        raise
    return stack


def run_async(coroutine):
    """Run a coroutine to completion on a fresh event loop in its own thread.

    The browser tests' session-scoped Playwright keeps an event loop running on the main
    thread, where asyncio.run() refuses to start another.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def follow(stack: Stack, session: requests.Session, path: str, until, timeout: float = 120) -> list[dict]:
    """Collect messages from a websocket stream until `until(messages)` is true."""
    import asyncio
    import json

    import websockets

    cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
    messages: list[dict] = []
    async with websockets.connect(stack.ws + path, origin=stack.url, additional_headers={"Cookie": cookie}) as socket:
        deadline = time.monotonic() + timeout
        while not until(messages):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; got {[m['type'] for m in messages]}"
            messages.append(json.loads(await asyncio.wait_for(socket.recv(), remaining)))
    return messages
