"""Queue routing per model, and the staff workers page fed by live worker status."""

import dramatiq
import pytest
from django.urls import reverse

from generation.models import Generation, WorkerStatus
from generation.services import submit_generation
from tests.generation.conftest import run_queue, stop_worker


def test_a_models_jobs_go_to_its_own_queue(tiny_model, alice, broker, django_capture_on_commit_callbacks):
    tiny_model.queue_name = "big-gpu"
    tiny_model.save()
    with django_capture_on_commit_callbacks(execute=True):
        submit_generation(alice, {"prompt": "a red circle", "steps": 2})
    assert broker.queues["big-gpu"].qsize() == 1
    assert broker.queues["default"].qsize() == 0


@pytest.mark.django_db(transaction=True)
def test_a_worker_serves_only_its_queues(tiny_model, alice, broker):
    tiny_model.queue_name = "big-gpu"
    tiny_model.save()
    # The same weights registered a second time, on the default queue: its job finishing shows that
    # the default-only worker was up and consuming while the big-gpu job sat next to it.
    on_default_model = type(tiny_model).objects.create(
        name="Tiny on default", slug="tiny-default", source=tiny_model.source, queue_name="default",
        default_width=32, default_height=32, max_width=64, max_height=64, default_sampler="Euler")
    request = {"prompt": "a red circle", "steps": 2, "width": 32, "height": 32}
    default_only = dramatiq.Worker(broker, worker_threads=1, queues={"default"})
    default_only.start()
    try:
        job = submit_generation(alice, request)
        on_default = submit_generation(alice, request, model=on_default_model)
        broker.join("default", timeout=120_000)
        default_only.join()
        on_default.refresh_from_db()
        assert on_default.status == Generation.Status.SUCCEEDED, "the worker ran the job on its own queue"
        job.refresh_from_db()
        assert job.status == Generation.Status.QUEUED, "a worker without the queue leaves the job alone"
        assert broker.queues["big-gpu"].qsize() == 1, "and does not take its message"
    finally:
        stop_worker(default_only)
    serving = dramatiq.Worker(broker, worker_threads=1, queues={"big-gpu"})
    serving.start()
    try:
        broker.join("big-gpu", timeout=120_000)
        serving.join()
    finally:
        stop_worker(serving)
    job.refresh_from_db()
    assert job.status == Generation.Status.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_staff_see_live_workers_with_their_models_and_others_cannot(tiny_model, alice, staff, broker, worker,
                                                                    client, settings):
    settings.LDM_HEARTBEAT_SECONDS = 1
    submit_generation(alice, {"prompt": "a red circle", "steps": 2, "width": 32, "height": 32})
    run_queue(broker, worker)
    import time

    deadline = time.monotonic() + 10
    while not any(tiny_model.source in [m["source"] for m in s.resident_models] for s in WorkerStatus.objects.all()):
        assert time.monotonic() < deadline, list(WorkerStatus.objects.values())
        time.sleep(0.2)
    client.force_login(alice)
    assert client.get(reverse("generation:workers")).status_code == 404
    client.force_login(staff)
    page = client.get(reverse("generation:workers")).content.decode()
    row = page.split('data-testid="workers"', 1)[1]
    assert "alive" in row and tiny_model.source in row, row
    # The precision the model runs in, and (LDM_PRECISION=auto) the measured timings that chose it.
    resident = next(m for s in WorkerStatus.objects.all() for m in s.resident_models if m["source"] == tiny_model.source)
    assert f'{resident["dtype"]} on cpu' in row and "per UNet call" in row, row
    assert resident["dtype"] == min(resident["timings_ms"], key=resident["timings_ms"].get)
