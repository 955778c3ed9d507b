"""A running job's progress is published off the sampling thread (generation/progress.py): the
engine's step callback returns at once, the steps in between are coalesced, the last step always
goes out, and events keep their order before the job's final event."""

import asyncio
import threading
import time

import pytest
from channels.layers import InMemoryChannelLayer
from PIL import Image as PILImage

from generation import events
from generation.diffusion import StepProgress
from generation.models import Generation
from generation.progress import JobProgress
from generation.services import submit_generation
from generation.workers import model_cache, resolve_source
from tests.generation.conftest import run_queue

pytestmark = pytest.mark.django_db(transaction=True)  # the publisher writes from its own thread
Status = Generation.Status


class SlowLayer(InMemoryChannelLayer):
    """The real in-memory channel layer, each group send delayed by `delay` seconds (a busy event
    loop or a slow Redis); it records what reached it, in the order it reached it."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay, self.received = delay, []

    async def group_send(self, group, message):
        await asyncio.sleep(self.delay)
        if group.startswith("generation.job."):  # each event goes to the job's and the owner's group
            self.received.append(message["event"])
        await super().group_send(group, message)

    def progress(self) -> list[dict]:
        return [event for event in self.received if event["type"] == "generation.progress"]


def running_job(owner):
    job = submit_generation(owner, {"prompt": "a red circle", "steps": 25, "seed": 1})
    Generation.objects.filter(pk=job.pk).update(status=Status.RUNNING, worker="test")
    return Generation.objects.get(pk=job.pk)


def step(number: int, total: int = 25) -> StepProgress:
    return StepProgress(step=number, total=total, elapsed=number * 0.01, eta_seconds=0.0,
                        preview=lambda: PILImage.new("RGB", (8, 8), (number * 10, 0, 0)))


def test_a_slow_channel_layer_does_not_slow_the_step_callback(tiny_model, alice, monkeypatch):
    layer = SlowLayer(delay=0.2)  # a send takes 0.2 s; a step of the built-in model ~25 ms
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    job = running_job(alice)
    progress = JobProgress(job, load_seconds=0.5)
    slowest = 0.0
    for number in range(1, 26):
        started = time.perf_counter()
        progress.update(step(number))
        slowest = max(slowest, time.perf_counter() - started)
        time.sleep(0.01)  # the step's own work
    assert slowest < 0.05, f"the callback waited for the channel layer: {slowest:.3f} s"
    progress.close()
    steps = [event["step"] for event in layer.progress()]
    assert steps[0] == 1 and steps[-1] == 25, steps
    assert len(steps) < 25, "the steps sent while a send was blocked are coalesced, not queued"


def test_coalescing_keeps_the_first_and_the_final_step_in_order_of_seq(tiny_model, alice, monkeypatch):
    layer = SlowLayer(delay=0.0)
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    job = running_job(alice)
    with JobProgress(job, load_seconds=1.25, interval=0.05) as progress:
        for number in range(1, 26):
            progress.update(step(number))
            time.sleep(0.005)
    received = layer.progress()
    steps = [event["step"] for event in received]
    assert steps[0] == 1 and steps[-1] == 25 and steps == sorted(set(steps)), steps
    assert 2 <= len(steps) < 25
    seqs = [event["seq"] for event in received]
    assert seqs == sorted(set(seqs)), f"events out of order: {seqs}"
    assert received[0]["load_seconds"] == 1.25 and all("load_seconds" not in e for e in received[1:])
    assert all(event["preview"].startswith("data:image/png;base64,") for event in received)
    row = Generation.objects.get(pk=job.pk)
    assert (row.step, row.total_steps) == (25, 25), "the row holds the last step"
    assert row.preview == received[-1]["preview"] and row.metadata["live"]["load_seconds"] == 1.25


def test_only_the_steps_that_are_published_get_a_preview_and_the_sampling_thread_makes_it(tiny_model, alice,
                                                                                      monkeypatch):
    layer = SlowLayer(delay=0.0)
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    job = running_job(alice)
    made_on = []

    def counted(number):
        def make():
            made_on.append((number, threading.get_ident()))
            return PILImage.new("RGB", (8, 8), (number * 10, 0, 0))
        return StepProgress(step=number, total=25, elapsed=number * 0.01, eta_seconds=0.0, preview=make)

    with JobProgress(job, load_seconds=0.0, interval=60) as progress:  # nothing due between first and last
        for number in range(1, 26):
            progress.update(counted(number))
    assert [event["step"] for event in layer.progress()] == [1, 25]
    assert [number for number, _ in made_on] == [1, 25], "no preview is made for a step nobody is sent"
    assert {thread for _, thread in made_on} == {threading.get_ident()}, "made on the sampling thread"


def test_a_job_through_the_worker_sends_its_last_step_before_it_succeeds(tiny_model, alice, broker, worker,
                                                                         monkeypatch):
    layer = SlowLayer(delay=0.05)  # slower than the tiny model's steps: coalescing happens
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    model_cache().evict(resolve_source(tiny_model.source))  # the worker's first job: it loads the model
    job = submit_generation(alice, {"prompt": "a red circle", "steps": 12, "seed": 3})
    run_queue(broker, worker)
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    types = [event["type"] for event in layer.received]
    assert types[:3] == ["generation.queued", "generation.started", "generation.loading"], types
    assert types[-1] == "generation.succeeded", types
    progress = layer.progress()
    assert progress[-1]["step"] == progress[-1]["total"] == 12 and types[-2] == "generation.progress"
    seqs = [event["seq"] for event in layer.received]
    assert seqs == sorted(set(seqs)), f"events out of order: {seqs}"
    assert job.preview == "" and "live" not in job.metadata, "no late progress update after the job finished"


def test_the_cancel_check_reads_the_row_a_few_times_a_second_not_at_every_step(tiny_model, alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    job = running_job(alice)
    with JobProgress(job, load_seconds=0.5) as progress:
        with CaptureQueriesContext(connection) as queries:
            answers = [progress.should_cancel() for _ in range(200)]  # 200 steps' checks in a few ms
        assert answers == [False] * 200
        assert len(queries) <= 2, "the sampling thread read the flag at most once or twice, not 200 times"
        Generation.objects.filter(pk=job.pk).update(cancel_requested=True)
        asked = time.monotonic()
        while not progress.should_cancel():
            assert time.monotonic() - asked < 2, "a cancel is seen within a quarter second"
            time.sleep(0.01)
        assert time.monotonic() - asked < 0.5


def test_progress_is_published_again_after_the_database_dropped_the_publishers_connection(tiny_model, alice, monkeypatch):
    # Publisher threads are kept between jobs, and so are their database connections: one the
    # database dropped (a restart) must cost a step's publication, not the rest of the job's.
    from django.db import connection

    from generation.progress import publishers

    layer = SlowLayer(delay=0)
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    first = JobProgress(running_job(alice), load_seconds=0.0, interval=0)
    first.update(step(1, total=3))
    first.close()

    def drop_connections():  # on every kept thread that holds one: the server went away under it
        if connection.connection is not None:
            connection.connection.close()

    for _ in range(8):
        publishers().submit(drop_connections).result()
    job = running_job(alice)
    progress = JobProgress(job, load_seconds=0.0, interval=0)
    for number in (1, 2, 3):
        progress.update(step(number, total=3))
    progress.close()
    published = [event["step"] for event in layer.progress() if event["job"] == job.pk]
    assert published and published[-1] == 3, published
    assert Generation.objects.get(pk=job.pk).step == 3
