"""Shared test fixtures: free ports, real services started by the tests themselves."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dramatiq.worker import ConsumerThread, WorkerThread

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path):
    """Files written by a test land in its own temporary folder."""
    settings.MEDIA_ROOT = tmp_path / "media"


# Threads of this process that write to the database: Dramatiq's worker and consumer threads,
# a worker's status reporter (WorkerStatusMiddleware), a running job's heartbeat, the recovery loop.
DATABASE_THREAD_NAMES = ("worker-status", "heartbeat-", "job-recovery")


def database_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.is_alive() and (
        isinstance(thread, (WorkerThread, ConsumerThread)) or thread.name.startswith(DATABASE_THREAD_NAMES))]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database, and a check before it is removed: no thread a test started
    still uses it. A leftover thread would write to a database that is gone and fill the end of
    the run with tracebacks, so it fails the run here, naming the threads."""
    yield
    threads = database_threads()
    # A Dramatiq worker nobody stopped: stop its threads (they end within their poll timeout),
    # and report it even if they do end.
    leaked_workers = [thread for thread in threads if isinstance(thread, (WorkerThread, ConsumerThread))]
    for thread in leaked_workers:
        thread.stop()
    deadline = time.monotonic() + 15
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    leftovers = sorted({thread.name for thread in threads if thread.is_alive() or thread in leaked_workers})
    assert not leftovers, (f"threads still running when the test database is removed: {leftovers}; stop and "
                           f"join them in the test or fixture that started them (tests/generation/conftest.py: "
                           f"stop_worker)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port, without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; `make test` installs it (Debian package redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process=process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


def site_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a subprocess of the site with its own data directory."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    env.update({"LDM_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "ldmsite.settings",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def live_site(tmp_path):
    """The real ASGI server (daphne, embedded mode) on a free port with a fresh database."""
    data_dir = tmp_path / "site"
    env = site_env(data_dir)
    migrated = manage(env, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    log = open(tmp_path / "daphne.log", "w")
    process = subprocess.Popen(
        [PYTHON, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port), "ldmsite.asgi:application"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=60, process=process)
        yield {"url": f"http://127.0.0.1:{port}", "env": env, "data_dir": data_dir, "process": process}
    finally:
        stop(process)
        log.close()
