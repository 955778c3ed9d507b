"""Generation jobs: submit, the fair queue, the per-person cap, the actor, cancel, recovery."""

from datetime import timedelta

import pytest
from django.utils import timezone
from PIL import Image as PILImage

from gallery.models import Image
from generation import events
from generation.models import Generation
from generation.admission import Refusal
from generation.queue import claim_next_job, fair_order, queue_position
from generation.outputs import image_summary
from generation.recovery import recover_jobs
from generation.services import cancel_generation, submit_generation
from generation.snapshots import job_snapshot
from generation.tasks import run_generation
from tests.generation.conftest import run_queue

Status = Generation.Status
PROMPT = {"prompt": "a red circle", "steps": 3, "seed": 7}


def submit(owner, model=None, **fields):
    return submit_generation(owner, {**PROMPT, **fields}, model=model)


def test_submitting_stores_a_queued_job_and_nudges_a_worker_after_commit(
        tiny_model, alice, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = submit(alice)
    assert job.status == Status.QUEUED
    assert job.params["prompt"] == "a red circle" and job.params["seed"] == 7
    assert broker.queues["default"].qsize() == 0, "no message before the row is committed"
    for callback in callbacks:
        callback()
    assert broker.queues["default"].qsize() == 1


def test_an_invalid_request_names_the_field_and_stores_nothing(tiny_model, alice):
    with pytest.raises(Refusal) as error:
        submit(alice, width=65, steps=0)
    assert set(error.value.errors) == {"width", "steps"}
    assert "multiple of 8" in error.value.errors["width"]
    assert Generation.objects.count() == 0


def test_an_omitted_seed_becomes_a_recorded_random_seed(tiny_model, alice):
    job = submit_generation(alice, {"prompt": "a blue square"})
    assert isinstance(job.params["seed"], int)


def test_a_person_over_the_active_job_cap_is_refused_with_a_clear_message(tiny_model, alice, bob, settings):
    settings.LDM_MAX_ACTIVE_JOBS = 2
    submit(alice)
    submit(alice)
    with pytest.raises(Refusal) as error:
        submit(alice)
    assert error.value.status == 429
    assert "the limit is 2" in error.value.errors["__all__"]
    assert Generation.objects.filter(owner=alice).count() == 2
    submit(bob)  # the cap is per person


def test_the_queue_is_round_robin_across_people(tiny_model, alice, bob, settings):
    settings.LDM_MAX_ACTIVE_JOBS = 100
    alices = [submit(alice) for _ in range(5)]
    bobs = submit(bob)
    order = list(fair_order().values_list("pk", flat=True))
    assert order[:3] == [alices[0].pk, bobs.pk, alices[1].pk], "bob's one job is not starved by alice's five"
    assert queue_position(bobs)[0] == 2
    first = claim_next_job("w1")
    second = claim_next_job("w1")
    assert (first.pk, second.pk) == (alices[0].pk, bobs.pk)


def test_a_claim_is_conditional_so_a_job_runs_once(tiny_model, alice):
    job = submit(alice)
    assert claim_next_job("w1").pk == job.pk
    assert claim_next_job("w2") is None
    job.refresh_from_db()
    assert (job.status, job.worker, job.attempts) == (Status.RUNNING, "w1", 1)


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_a_job_and_stores_its_images(tiny_model, alice, broker, worker):
    job = submit(alice, num_images=2)
    run_queue(broker, worker)
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED, job.error_detail
    images = list(Image.objects.filter(generation=job).order_by("index"))
    assert [image.seed for image in images] == [7, 8], "image k uses seed + k"
    with images[0].file.open("rb") as handle:
        png = PILImage.open(handle)
        png.load()
        assert png.size == (32, 32)
        assert "Seed: 7" in png.text["parameters"]
    assert images[0].thumbnail.name.endswith(".webp")
    assert images[0].owner == alice and not images[0].saved and images[0].visibility == "private"


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_message_runs_the_job_once(tiny_model, alice, broker, worker):
    job = submit(alice)
    run_generation.send(job.pk)  # delivered twice
    run_queue(broker, worker)
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    assert job.attempts == 1
    assert Image.objects.filter(generation=job).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_model_that_cannot_load_fails_the_job_with_a_message_a_person_understands(
        tiny_model, alice, broker, worker, tmp_path):
    tiny_model.source = str(tmp_path / "missing-model")
    tiny_model.save()
    job = submit(alice)
    run_queue(broker, worker)
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.error_message.startswith("The model could not be loaded")
    assert "missing-model" in job.error_message
    assert job.error_detail, "staff see the technical cause"
    assert job.finished_at is not None


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_job_stops_it_within_a_step_and_keeps_the_image_it_had(
        tiny_model, alice, broker, worker, monkeypatch):
    job = submit(alice, steps=40)
    seen_steps, cancelled_events = [], []
    original = events.publish

    def cancel_at_step_two(job_obj, event_type, **payload):
        if event_type == "generation.progress":
            seen_steps.append(payload["step"])
            if payload["step"] >= 2:
                Generation.objects.filter(pk=job_obj.pk).update(cancel_requested=True)
        if event_type == "generation.cancelled":
            cancelled_events.append(payload)
        return original(job_obj, event_type, **payload)

    monkeypatch.setattr(events, "publish", cancel_at_step_two)
    monkeypatch.setattr("generation.progress.PUBLISH_INTERVAL_SECONDS", 0)
    run_queue(broker, worker)
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert max(seen_steps) <= 3, f"ran on after the cancel: steps {seen_steps}"
    # As A1111 returns the partial image on interrupt: the estimate at the step it reached.
    [image] = Image.objects.filter(generation=job)
    reached = image.metadata["interrupted_at_step"]
    assert image.metadata["interrupted"] is True and 2 <= reached <= 3 and image.metadata["total_steps"] == 40
    assert job.metadata["interrupted"] is True and job.metadata["interrupted_at_step"] == reached == job.step
    with image.file.open("rb") as handle:
        png = PILImage.open(handle)
        png.load()
        assert png.size == (32, 32) and "Seed: 7" in png.text["parameters"]
    assert image.owner == alice and not image.saved and image.visibility == "private"
    assert cancelled_events == [{"images": [image_summary(image)]}]
    snapshot = job_snapshot(job)
    assert snapshot["images"] == [image_summary(image)] and snapshot["interrupted"] is True
    assert snapshot["preview"] is None and job.preview == "", "the images replace the live preview"


@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_before_its_first_step_keeps_no_image(tiny_model, alice, broker, worker, monkeypatch):
    job = submit(alice)
    original = events.publish

    def cancel_when_started(job_obj, event_type, **payload):
        if event_type == "generation.started":
            Generation.objects.filter(pk=job_obj.pk).update(cancel_requested=True)
        return original(job_obj, event_type, **payload)

    monkeypatch.setattr(events, "publish", cancel_when_started)
    run_queue(broker, worker)
    job.refresh_from_db()
    assert (job.status, job.step) == (Status.CANCELLED, 0)
    assert not Image.objects.filter(generation=job).exists() and "interrupted" not in job.metadata
    assert job_snapshot(job)["images"] == [] and job_snapshot(job)["interrupted"] is False


@pytest.mark.django_db(transaction=True)
def test_a_running_job_keeps_its_latest_preview_on_the_row_and_in_its_snapshot(
        tiny_model, alice, broker, worker, monkeypatch):
    job = submit(alice, steps=4)
    seen = []
    original = events.publish

    def look_at_the_row(job_obj, event_type, **payload):
        if event_type == "generation.progress":
            row = Generation.objects.get(pk=job_obj.pk)
            seen.append((payload["step"], payload["preview"], row.step, row.preview, job_snapshot(row)["preview"]))
        return original(job_obj, event_type, **payload)

    monkeypatch.setattr(events, "publish", look_at_the_row)
    monkeypatch.setattr("generation.progress.PUBLISH_INTERVAL_SECONDS", 0)
    run_queue(broker, worker)
    assert [step for step, *_ in seen] == [1, 2, 3, 4]
    for step, sent, row_step, stored, in_snapshot in seen:
        assert sent.startswith("data:image/png;base64,")
        assert (row_step, stored, in_snapshot) == (step, sent, sent), "the same update records the step and preview"
    assert len({sent for _, sent, *_ in seen}) > 1, "each step's own preview"
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED and job.preview == "", "once the images exist the preview goes"
    snapshot = job_snapshot(job)
    assert snapshot["preview"] is None and len(snapshot["images"]) == 1


def test_cancelling_a_queued_job_is_immediate(tiny_model, alice):
    job = cancel_generation(submit(alice))
    assert job.status == Status.CANCELLED
    assert claim_next_job("w1") is None


def test_start_up_recovery_re_nudges_every_queued_job(tiny_model, alice, broker):
    jobs = [submit(alice) for _ in range(3)]
    broker.flush_all()  # the in-memory broker lost its messages in a restart
    report = recover_jobs(on_startup=True)
    assert report.renudged == 3
    assert broker.queues["default"].qsize() == 3
    assert all(Generation.objects.get(pk=j.pk).nudged_at is not None for j in jobs)


def test_periodic_recovery_re_nudges_only_jobs_whose_message_is_overdue(tiny_model, alice, broker, settings):
    fresh, stale = submit(alice), submit(alice)
    now = timezone.now()
    Generation.objects.filter(pk=fresh.pk).update(nudged_at=now)
    Generation.objects.filter(pk=stale.pk).update(nudged_at=now - timedelta(seconds=settings.LDM_REQUEUE_AFTER_SECONDS + 5))
    broker.flush_all()
    assert recover_jobs().renudged == 1


def test_a_job_whose_worker_died_is_retried_then_failed_with_the_reason(tiny_model, alice, broker, settings):
    settings.LDM_JOB_MAX_ATTEMPTS = 2
    job = submit(alice)
    long_ago = timezone.now() - timedelta(seconds=settings.LDM_HEARTBEAT_TIMEOUT_SECONDS + 30)

    claim_next_job("dead-worker-1")
    Generation.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)
    assert recover_jobs().retried == 1
    job.refresh_from_db()
    assert job.status == Status.QUEUED and job.attempts == 1

    claim_next_job("dead-worker-2")
    Generation.objects.filter(pk=job.pk).update(heartbeat_at=long_ago)
    assert recover_jobs().failed == 1
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "stopped responding 2 times" in job.error_message


def test_a_live_worker_heartbeat_keeps_its_job(tiny_model, alice):
    job = submit(alice)
    claim_next_job("live-worker")
    report = recover_jobs()
    job.refresh_from_db()
    assert report.retried == 0 and job.status == Status.RUNNING


@pytest.mark.django_db(transaction=True)
def test_previews_are_throttled_to_about_ten_per_second(tiny_model, alice, broker, worker, monkeypatch):
    job = submit(alice, steps=60)
    progress = []
    original = events.publish

    def record(job_obj, event_type, **payload):
        if event_type == "generation.progress":
            progress.append(payload)
        return original(job_obj, event_type, **payload)

    monkeypatch.setattr(events, "publish", record)
    run_queue(broker, worker)
    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    elapsed = progress[-1]["elapsed"]
    assert len(progress) <= elapsed * 10 + 2, f"{len(progress)} previews in {elapsed:.2f}s"
    assert progress[-1]["step"] == 60, "the final step is always sent"
    assert all(p["preview"].startswith("data:image/png;base64,") for p in progress)
