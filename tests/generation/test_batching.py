"""Batching across people on a real worker: the claim (fair order, compatibility), one batch run,
per-job cancel and failure, heartbeats together (issue 28)."""

import time

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from PIL import Image as PILImage

from gallery.models import Image
from generation import diffusion, events
from generation.models import Generation
from generation.queue import claim_compatible_jobs, claim_next_job
from generation.runner import Heartbeat
from generation.services import submit_generation
from generation.workers import load_for_job
from tests.generation.conftest import run_queue, start_worker, stop_worker

Status = Generation.Status
PROMPT = {"prompt": "a red circle", "steps": 3, "seed": 7}


def submit(owner, **fields):
    return submit_generation(owner, {**PROMPT, **fields})


@pytest.fixture
def carol(db):
    return get_user_model().objects.create_user("carol", "carol@example.com", "violet-lantern-4821")


@pytest.fixture
def batching(settings):
    settings.LDM_MAX_BATCH = 4
    settings.LDM_BATCH_WINDOW_MS = 0
    settings.LDM_MAX_ACTIVE_JOBS = 100


def stored_pixels(image: Image):
    with image.file.open("rb") as handle:
        picture = PILImage.open(handle)
        picture.load()
        return np.asarray(picture.convert("RGB"))


def alone_at_the_workers_threads(loaded, request, threads: int):
    """The job alone with the torch threads the worker ran it with (its metadata records them): the
    kernels' results depend on the thread count, batched or not, and torch's setting is per thread
    (the worker's thread set its own)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return diffusion.generate(loaded, request)
    finally:
        torch.set_num_threads(before)


def test_one_persons_eight_queued_jobs_do_not_fill_a_batch_ahead_of_others(tiny_model, alice, bob, carol, batching):
    alices = [submit(alice, seed=seed) for seed in range(8)]
    bobs, carols = submit(bob, prompt="a blue square"), submit(carol, prompt="a green circle")
    first = claim_next_job("w1", model_id=tiny_model.pk)
    companions = claim_compatible_jobs("w1", first, limit=3, window_seconds=0)
    assert [first.pk] + [job.pk for job in companions] == [alices[0].pk, bobs.pk, carols.pk, alices[1].pk]
    assert Generation.objects.filter(status=Status.RUNNING).count() == 4
    assert all(job.worker == "w1" and job.attempts == 1 for job in companions)


def test_only_compatible_jobs_join_a_batch_and_the_others_stay_queued(tiny_model, alice, bob, carol, batching):
    first = submit(alice)
    other_size = submit(bob, width=64)
    other_sampler = submit(bob, sampler="DPM++ 2M")
    guided = submit(carol, clip_guidance_scale=100)
    same = submit(carol, prompt="a blue square", seed=99, guidance_scale=9.0, num_images=2)
    claimed = claim_next_job("w1", model_id=tiny_model.pk)
    assert claimed.pk == first.pk
    assert [job.pk for job in claim_compatible_jobs("w1", claimed, limit=3, window_seconds=0)] == [same.pk]
    for job in (other_size, other_sampler, guided):
        job.refresh_from_db()
        assert job.status == Status.QUEUED


def test_a_claimed_job_waits_the_window_for_companions_while_others_are_submitting(
        tiny_model, alice, bob, batching):
    first = submit(alice)
    submit(bob, prompt="a blue square", steps=4)  # someone else is busy with the model (other steps)
    claimed = claim_next_job("w1", model_id=tiny_model.pk)
    started = time.monotonic()
    assert claim_compatible_jobs("w1", claimed, limit=2, window_seconds=0.05) == []
    assert time.monotonic() - started >= 0.05, "nobody compatible came: it waited the whole window"


def test_a_lone_persons_job_on_a_quiet_model_waits_for_no_companions(tiny_model, alice, batching):
    submit(alice)
    claimed = claim_next_job("w1", model_id=tiny_model.pk)
    queued_own = submit(alice)
    started = time.monotonic()
    assert [job.pk for job in claim_compatible_jobs("w1", claimed, limit=2, window_seconds=5)] == [queued_own.pk]
    assert time.monotonic() - started < 2, "a quiet model: what is queued joins, nobody is waited for"


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_different_peoples_jobs_as_one_batch_each_image_as_its_job_alone(
        tiny_model, alice, bob, carol, broker, batching):
    jobs = [submit(alice), submit(bob, prompt="a blue square on black background", seed=3, guidance_scale=8.0),
            submit(carol, prompt="a green circle", seed=11, num_images=2)]
    worker = start_worker(broker)  # after the submissions: the first message finds them all queued
    try:
        run_queue(broker, worker)
    finally:
        stop_worker(worker)
    loaded = load_for_job(tiny_model)
    for job in jobs:
        job.refresh_from_db()
        assert job.status == Status.SUCCEEDED, job.error_detail
        images = list(Image.objects.filter(generation=job).order_by("index"))
        assert images[0].metadata["batch"] == {"requests": 3, "samples": 4}
        alone = alone_at_the_workers_threads(loaded, job.request, images[0].metadata["torch_threads"])
        assert [stored_pixels(image).tolist() for image in images] == \
            [np.asarray(picture).tolist() for picture in alone.images]
    assert len({job.started_at for job in jobs}) <= 3 and len({job.worker for job in jobs}) == 1


@pytest.mark.django_db(transaction=True)
def test_cancelling_one_job_of_a_running_batch_leaves_the_others_images_unchanged(
        tiny_model, alice, bob, broker, batching, monkeypatch):
    keep = submit(alice, steps=12)
    cancel = submit(bob, prompt="a blue square", seed=5, steps=12)
    original = events.publish

    def cancel_bob_at_step_two(job_obj, event_type, **payload):
        if event_type == "generation.progress" and job_obj.pk == cancel.pk and payload["step"] >= 2:
            Generation.objects.filter(pk=job_obj.pk).update(cancel_requested=True)
        return original(job_obj, event_type, **payload)

    monkeypatch.setattr(events, "publish", cancel_bob_at_step_two)
    monkeypatch.setattr("generation.progress.PUBLISH_INTERVAL_SECONDS", 0)
    worker = start_worker(broker)
    try:
        run_queue(broker, worker)
    finally:
        stop_worker(worker)
    cancel.refresh_from_db()
    keep.refresh_from_db()
    assert cancel.status == Status.CANCELLED and 2 <= cancel.step <= 3 < 12
    [partial] = Image.objects.filter(generation=cancel)
    assert partial.metadata["interrupted"] is True and partial.metadata["batch"]["requests"] == 2
    assert keep.status == Status.SUCCEEDED and keep.step == 12
    [kept] = Image.objects.filter(generation=keep)
    alone = alone_at_the_workers_threads(load_for_job(tiny_model), keep.request, kept.metadata["torch_threads"])
    assert np.array_equal(stored_pixels(kept), np.asarray(alone.images[0]))


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_images_cannot_be_stored_fails_alone_and_its_companions_succeed(
        tiny_model, alice, bob, carol, broker, batching, monkeypatch):
    jobs = [submit(alice), submit(bob, seed=2), submit(carol, seed=3)]
    import generation.runner as runner

    original = runner.store_checked_image

    def disk_full_for_bob(job, *args, **kwargs):
        if job.pk == jobs[1].pk:
            raise OSError("No space left on device")
        return original(job, *args, **kwargs)

    monkeypatch.setattr(runner, "store_checked_image", disk_full_for_bob)
    worker = start_worker(broker)
    try:
        run_queue(broker, worker)
    finally:
        stop_worker(worker)
    statuses = []
    for job in jobs:
        job.refresh_from_db()
        statuses.append(job.status)
    assert statuses == [Status.SUCCEEDED, Status.FAILED, Status.SUCCEEDED]
    assert "internal error" in jobs[1].error_message and "No space left" in jobs[1].error_detail
    assert Image.objects.filter(generation=jobs[0]).count() == 1 and Image.objects.filter(generation=jobs[2]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_jobs_of_a_batch_heartbeat_together(tiny_model, alice, bob, settings):
    settings.LDM_HEARTBEAT_SECONDS = 1
    settings.LDM_MAX_BATCH = 2
    first, second = submit(alice), submit(bob, seed=9)
    claimed = claim_next_job("w1", model_id=tiny_model.pk)
    [companion] = claim_compatible_jobs("w1", claimed, limit=1, window_seconds=0)
    old = claimed.heartbeat_at
    with Heartbeat([claimed.pk, companion.pk], "w1"):
        time.sleep(1.5)
    beats = Generation.objects.filter(pk__in=[first.pk, second.pk]).values_list("heartbeat_at", flat=True)
    assert all(beat > old for beat in beats)
