"""Actors really run: on worker threads inside the server (embedded mode), and in a
separate `rundramatiq` process through a real Redis server (scale-out mode)."""

import os
import subprocess
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from generation.services import probe_workers
from generation.workers import start_embedded_worker, stop_embedded_worker
from tests.conftest import PYTHON, REPO, manage, site_env, stop
from tests.generation.conftest import stop_worker


@pytest.mark.django_db(transaction=True)
def test_an_embedded_worker_thread_executes_an_actor_inside_the_server_process():
    assert isinstance(dramatiq.get_broker(), StubBroker), "embedded mode uses the in-memory broker"
    worker = start_embedded_worker(threads=1)
    try:
        probe = probe_workers(timeout=20)
    finally:
        # The server registers the worker's stop to run at exit; here the test stops it now, and
        # a second stop at exit would reach for a test database that is gone.
        stop_embedded_worker(worker)
        for each in worker.workers:
            stop_worker(each)
    assert probe.answered_at is not None, "no embedded worker thread answered"
    host_pid, thread_name = probe.answered_by.split("/", 1)
    assert host_pid.endswith(f":{os.getpid()}"), "the actor ran in this very process"
    assert thread_name != "MainThread", "the actor ran on a worker thread, not inline"


@pytest.mark.django_db
def test_without_a_worker_the_probe_is_left_unanswered():
    probe = probe_workers(timeout=0.3)
    assert probe.answered_at is None


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        chain.append(pid)
    return chain


def test_a_separate_worker_process_executes_an_actor_through_a_real_redis(tmp_path, redis_server):
    env = site_env(tmp_path, REDIS_URL=redis_server, SECRET_KEY="scale-out-test-" + "x" * 40)
    assert manage(env, "migrate", "--noinput").returncode == 0
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [PYTHON, "manage.py", "rundramatiq", "--processes", "1", "--threads", "1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        result = manage(env, "probe_workers", "--timeout", "90", timeout=150)
        assert result.returncode == 0, result.stderr + (tmp_path / "worker.log").read_text()
        answered_by = result.stdout.split("answered by ", 1)[1].split()[0]
        pid = int(answered_by.split(":")[1].split("/")[0])
        assert worker.pid in ancestors(pid), "the answer came from a process the worker command started"
    finally:
        stop(worker)
        log.close()


def test_torch_threads_leave_the_web_server_a_core_in_embedded_mode_and_follow_the_setting(settings, monkeypatch):
    import os

    import torch

    from generation import workers

    cores = len(os.sched_getaffinity(0))
    settings.LDM_TORCH_THREADS, settings.EMBEDDED_WORKER_THREADS = 0, 1
    assert workers.torch_threads() == max(1, cores - 1)
    settings.EMBEDDED_WORKER_THREADS = 0  # scale-out: the worker process has the cores to itself
    assert workers.torch_threads() is None
    settings.LDM_TORCH_THREADS = 3
    assert workers.torch_threads() == 3

    before = torch.get_num_threads()
    monkeypatch.setattr(workers, "_threads_done", False)
    try:
        workers.apply_torch_threads()
        assert torch.get_num_threads() == 3
        settings.LDM_TORCH_THREADS = 2
        workers.apply_torch_threads()  # once per process: before the first model runs
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
