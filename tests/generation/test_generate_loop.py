"""The generate loop's live states: loading the model, a smoothed ETA, previews that look like the image."""

import base64
import io
import time

import pytest
from PIL import Image as PILImage

from generation import events
from generation.models import Generation
from generation.progress import StepTimer, preview_data_url
from generation.services import submit_generation
from generation.snapshots import job_snapshot
from generation.workers import model_cache, resolve_source
from tests.generation.conftest import run_queue

Status = Generation.Status


def test_the_smoothed_eta_does_not_jump_with_one_slow_step():
    timer = StepTimer(started=0.0)
    now, etas = 0.0, []
    for step, each in enumerate([1.0, 1.0, 1.0, 5.0, 1.0, 1.0], start=1):  # one step five times slower
        now += each
        etas.append(timer.observe(step, 10, now))
    assert etas[:3] == [9.0, 8.0, 7.0]
    raw_after_slow = 5.0 * 6  # the slow step's own rate, times the steps left
    assert etas[3] < raw_after_slow / 2, f"the estimate follows one slow step only partly: {etas}"
    assert etas[5] < etas[3], "and comes back down"


def decoded(url: str) -> PILImage.Image:
    return PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L")


def test_a_preview_keeps_every_latent_pixel_exactly_and_the_page_enlarges_it():
    # The built-in model's 64 px images have 16 px latents: a lossless 16 px picture, not a
    # blurred or enlarged one (the page scales it smoothly to its box: generate.css).
    small = PILImage.new("RGB", (16, 16), (20, 40, 200))
    small.putpixel((8, 8), (250, 10, 10))
    url = preview_data_url(small)
    assert url.startswith("data:image/png;base64,")
    picture = PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    assert picture.size == (16, 16) and picture.getpixel((8, 8)) == (250, 10, 10)
    assert picture.getpixel((0, 0)) == (20, 40, 200)


def test_a_preview_of_large_latents_is_shrunk_to_256_px_and_sent_as_webp():
    assert decoded(preview_data_url(PILImage.new("RGB", (512, 256)))).size == (256, 128)
    sdxl = preview_data_url(PILImage.new("RGB", (128, 128)))  # a 1024 px image's latents: lossy, far fewer bytes
    assert sdxl.startswith("data:image/webp;base64,") and decoded(sdxl).size == (128, 128)


def recorded_events(monkeypatch) -> list:
    """(type, payload, the job's snapshot when it was sent) of every event published from now on."""
    seen = []
    original = events.publish

    def record(job_obj, event_type, **payload):
        snapshot = job_snapshot(Generation.objects.get(pk=job_obj.pk))
        seen.append((event_type, payload, snapshot))
        return original(job_obj, event_type, **payload)

    monkeypatch.setattr(events, "publish", record)
    return seen


@pytest.mark.django_db(transaction=True)
def test_a_job_announces_loading_then_steps_with_the_load_time_apart(tiny_model, alice, broker, worker, monkeypatch):
    model_cache().evict(resolve_source(tiny_model.source))  # this worker's first job on the model
    job = submit_generation(alice, {"prompt": "a red circle", "steps": 4, "seed": 7})
    seen = recorded_events(monkeypatch)
    monkeypatch.setattr("generation.progress.PUBLISH_INTERVAL_SECONDS", 0)
    run_queue(broker, worker)
    types = [event_type for event_type, *_ in seen]
    assert types[:3] == ["generation.started", "generation.loading", "generation.progress"], types
    loading_snapshot = seen[1][2]
    assert loading_snapshot["status"] == "running" and loading_snapshot["phase"] == "loading"
    first_progress = seen[2][1]
    assert first_progress["load_seconds"] >= 0 and first_progress["step"] == 1
    assert all("load_seconds" not in payload for t, payload, _ in seen[3:] if t == "generation.progress")
    # While it runs, a (re)connecting client gets the estimate and the preview, and no "loading".
    during = seen[3][2]
    assert during["phase"] is None and during["eta"] is not None and during["eta"] >= 0
    assert during["preview"].startswith("data:image/png;base64,")
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    assert "live" not in job.metadata and job.metadata["load_seconds"] >= 0
    assert job_snapshot(job)["eta"] is None


@pytest.mark.django_db(transaction=True)
def test_a_job_on_a_model_already_loaded_goes_from_started_straight_to_its_steps(tiny_model, alice, broker, worker,
                                                                                 monkeypatch):
    submit_generation(alice, {"prompt": "a red circle", "steps": 4, "seed": 7})
    run_queue(broker, worker)  # loads the model
    job = submit_generation(alice, {"prompt": "a blue square", "steps": 4, "seed": 8})
    seen = recorded_events(monkeypatch)
    run_queue(broker, worker)
    types = [event_type for event_type, *_ in seen]
    assert types[:2] == ["generation.started", "generation.progress"], types
    assert "generation.loading" not in types
    assert Generation.objects.get(pk=job.pk).status == Status.SUCCEEDED


@pytest.mark.django_db
def test_a_running_snapshot_counts_its_estimate_down(tiny_model, alice):
    job = submit_generation(alice, {"prompt": "a red circle", "steps": 4, "seed": 7})
    Generation.objects.filter(pk=job.pk).update(status=Status.RUNNING, step=2,
                                                metadata={"live": {"eta": 10.0, "at": time.time() - 4}})
    snapshot = job_snapshot(Generation.objects.get(pk=job.pk))
    assert 5.5 <= snapshot["eta"] <= 6.0 and snapshot["phase"] is None


def test_the_first_steps_warm_up_is_not_in_the_later_estimate():
    timer = StepTimer(started=0.0)
    assert timer.observe(1, 10, 5.0) == 45.0, "a first guess from the first step (warm-up included)"
    assert timer.observe(2, 10, 6.0) == 8.0, "the first plain step replaces it"
    assert timer.observe(3, 10, 7.0) == 7.0
