"""Fixtures for job tests: a tiny seeded model registered in the database, people, and a real
Dramatiq worker (threads) consuming the in-memory broker."""

import threading
import time

import dramatiq
import pytest
from django.contrib.auth import get_user_model

from generation.diffusion.hashing import directory_content_hash
from generation.models import DiffusionModel
from tests.generation.diffusion.tiny import build_tiny_pipeline

User = get_user_model()


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-pipeline"), with_clip=True)


@pytest.fixture
def tiny_model(db, tiny_pipeline_dir):
    # Only this model: the built-in one (registered by migrate) would change lists and defaults.
    DiffusionModel.objects.all().delete()
    return DiffusionModel.objects.create(
        name="Tiny", slug="tiny", source=str(tiny_pipeline_dir), family="sd1", has_clip=True,
        revision=directory_content_hash(tiny_pipeline_dir),  # as the registry records it
        default_width=32, default_height=32, max_width=64, max_height=64,
        default_steps=4, max_steps=150, default_sampler="Euler", default_guidance_scale=5.0, is_default=True,
    )


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", "alice@example.com", "violet-lantern-4821")


@pytest.fixture
def bob(db):
    return User.objects.create_user("bob", "bob@example.com", "violet-lantern-4821")


@pytest.fixture
def staff(db):
    return User.objects.create_user("sam", "sam@example.com", "violet-lantern-4821", is_staff=True)


@pytest.fixture
def broker():
    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()


def start_worker(broker) -> dramatiq.Worker:
    """A real Dramatiq worker (one thread) consuming `broker`; stop it with `stop_worker`."""
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    return worker


@pytest.fixture
def worker(broker):
    worker = start_worker(broker)
    yield worker
    stop_worker(worker)


# Threads a worker starts besides Dramatiq's own: the status reporter (WorkerStatusMiddleware)
# and a running job's heartbeat. Both write to the database.
WORKER_SIDE_THREADS = ("worker-status", "heartbeat-")


def stop_worker(worker: dramatiq.Worker, timeout_s: float = 60) -> None:
    """Stop a Dramatiq worker and wait, up to `timeout_s`, until every thread it started has ended.

    A thread left running would go on writing to the test database after the test (or the
    session) has removed it."""
    deadline = time.monotonic() + timeout_s
    worker.stop(timeout=int(timeout_s * 1000))
    threads = [*worker.workers, *worker.consumers.values()]
    threads += [t for t in threading.enumerate() if t.name.startswith(WORKER_SIDE_THREADS)]
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    still_running = [thread.name for thread in threads if thread.is_alive()]
    assert not still_running, f"worker threads still running {timeout_s:.0f} s after stop: {still_running}"


def run_queue(broker, worker, timeout_ms: int = 120_000) -> None:
    """Wait until every message has been processed."""
    broker.join("default", timeout=timeout_ms)
    worker.join()
