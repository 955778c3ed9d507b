"""LoRA training as a job (generation.training_jobs, training_queue, training_runner): what may be
submitted, the cap and the fair order, a real training on a real worker that makes a LoRA the
owner can use by name, cancelling, and a training whose worker died resuming from its checkpoint."""

from __future__ import annotations

import io
import time
import zipfile
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image as PILImage

from gallery.models import Album, AlbumItem, Image, Lora, unguessable_name
from generation import training_jobs, training_queue, training_runner
from generation.admission import Refusal
from generation.diffusion import dataset
from generation.models import LoraTraining
from generation.services import submit_generation
from generation.workers import TRAINING_QUEUE
from generation.training_jobs import cancel_training, recover_trainings, submit_training
from generation.training_queue import checkpoint_dir, claim_next_training, fair_order
from tests.generation.conftest import start_worker, stop_worker

Status = LoraTraining.Status
FEW = {"steps": 4, "rank": 2, "batch_size": 2, "learning_rate": "5e-3"}


@pytest.fixture(autouse=True)
def one_torch_thread(settings):
    """Tiny models gain nothing from a second thread on the shared test machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def plus_pngs(count: int) -> list[tuple[bytes, str]]:
    """Rendered plus signs (the procedural dataset's opt-in shape) as PNG bytes with captions."""
    images, specs = dataset.generate(count, 0, {"shape": "plus"})
    found = []
    for image, spec in zip(images, specs):
        buffer = io.BytesIO()
        PILImage.fromarray(image).save(buffer, format="PNG")
        found.append((buffer.getvalue(), dataset.caption(spec.attributes())))
    return found


def plus_album(owner, count: int = 4) -> Album:
    album = Album.objects.create(owner=owner, title="Pluses")
    for index, (data, caption) in enumerate(plus_pngs(count)):
        image = Image.objects.create(owner=owner, file=default_storage.save(unguessable_name("png"), ContentFile(data)),
                                     width=64, height=64, seed=index, prompt=caption)
        AlbumItem.objects.create(album=album, image=image, position=index)
    return album


def zip_of(members: dict[str, bytes]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("images.zip", buffer.getvalue(), content_type="application/zip")


def wait_until_final(training: LoraTraining, timeout: float = 120) -> LoraTraining:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        training.refresh_from_db()
        if training.is_final:
            return training
        time.sleep(0.1)
    raise AssertionError(f"training {training.pk} still {training.status} after {timeout} s")


# --- What may be submitted -----------------------------------------------------------------------

def test_a_training_request_names_every_refused_field_and_stores_nothing(tiny_model, alice, bob):
    theirs = plus_album(bob, 1)
    with pytest.raises(Refusal) as refused:
        submit_training(alice, {"name": "bad name!", "trigger": "", "rank": "0", "steps": "many",
                                "learning_rate": "nan", "album": theirs.pk})
    assert set(refused.value.errors) == {"name", "trigger", "rank", "steps", "learning_rate", "album"}
    assert "<lora:name:weight>" in refused.value.errors["name"]
    assert refused.value.errors["album"] == "must be one of your albums"
    assert not LoraTraining.objects.exists()


def test_an_empty_album_a_taken_name_or_no_images_at_all_is_refused(tiny_model, alice):
    empty = Album.objects.create(owner=alice, title="Empty")
    with pytest.raises(Refusal) as refused:
        submit_training(alice, {"name": "plsgn", "trigger": "plsgn", "album": empty.pk})
    assert refused.value.errors == {"album": "has no images; add at least one"}
    Lora.objects.create(owner=alice, name="plsgn", base_model=tiny_model, file="x", file_hash="0" * 64)
    with pytest.raises(Refusal) as refused:
        submit_training(alice, {"name": "plsgn", "trigger": "plsgn"})
    assert set(refused.value.errors) == {"name", "album"}


def test_a_zip_of_images_and_captions_is_counted_and_its_paths_never_leave_the_work_folder(
        tiny_model, alice, tmp_path):
    (data, caption), (other, _) = plus_pngs(2)
    upload = zip_of({"../../escape.png": data, "../../escape.txt": caption.encode(), "sub/two.png": other})
    training = submit_training(alice, {"name": "plsgn", "trigger": "plsgn", **FEW}, upload)
    assert training.image_count == 2 and training.upload.name.startswith("trainings/uploads/")
    destination = tmp_path / "work" / "data"
    assert training_queue.write_dataset(training, destination) == 2
    assert sorted(p.name for p in destination.iterdir()) == ["00000.png", "00000.txt", "00001.png", "00001.txt"]
    assert (destination / "00000.txt").read_text() == caption
    assert not list(tmp_path.glob("escape*")) and not (tmp_path.parent / "escape.png").exists()


def test_a_zip_bomb_a_non_zip_and_a_zip_without_images_are_refused_naming_images(
        tiny_model, alice, monkeypatch):
    monkeypatch.setattr(training_queue, "MAX_UNZIPPED_BYTES", 100_000)
    bomb = zip_of({"a.png": b"\0" * 200_000})  # compresses to a few hundred bytes
    assert len(bomb.read()) < 2000
    bomb.seek(0)
    for upload, words in ((bomb, "unpacks to more than"),
                          (SimpleUploadedFile("x.zip", b"not a zip"), "is not a zip file"),
                          (zip_of({"notes.txt": b"hello"}), "holds no images"),
                          (zip_of({"a.png": b"not really a png"}), "a.png is not an image")):
        with pytest.raises(Refusal) as refused:
            submit_training(alice, {"name": "plsgn", "trigger": "plsgn"}, upload)
        assert list(refused.value.errors) == ["images"] and words in refused.value.errors["images"]
    assert not LoraTraining.objects.exists()


def test_the_form_defaults_are_the_training_cores_measured_defaults():
    from generation.diffusion.training import lora as core

    assert (training_jobs.DEFAULT_RANK, training_jobs.DEFAULT_STEPS, training_jobs.DEFAULT_LEARNING_RATE,
            training_jobs.DEFAULT_BATCH_SIZE) == (core.DEFAULT_RANK, core.DEFAULT_STEPS,
                                                  core.DEFAULT_LEARNING_RATE, core.DEFAULT_BATCH_SIZE)


# --- Cap, order, claims --------------------------------------------------------------------------

def test_a_person_at_the_active_training_cap_is_refused_with_a_clear_message(tiny_model, alice, staff, settings):
    settings.LDM_MAX_ACTIVE_TRAININGS = 1
    album = plus_album(alice, 1)
    submit_training(alice, {"name": "one", "trigger": "plsgn", "album": album.pk})
    with pytest.raises(Refusal) as refused:
        submit_training(alice, {"name": "two", "trigger": "plsgn", "album": album.pk})
    assert refused.value.status == 429 and refused.value.limit == "active_trainings"
    assert "the limit is 1" in refused.value.errors["__all__"]
    staff_album = plus_album(staff, 1)
    submit_training(staff, {"name": "a", "trigger": "plsgn", "album": staff_album.pk})
    submit_training(staff, {"name": "b", "trigger": "plsgn", "album": staff_album.pk})  # staff are exempt


def test_trainings_are_claimed_round_robin_across_people_and_once(tiny_model, alice, bob, settings):
    settings.LDM_MAX_ACTIVE_TRAININGS = 5
    albums = {alice: plus_album(alice, 1), bob: plus_album(bob, 1)}
    made = [submit_training(person, {"name": name, "trigger": "plsgn", "album": albums[person].pk})
            for person, name in ((alice, "a1"), (alice, "a2"), (alice, "a3"), (bob, "b1"))]
    assert [t.name for t in fair_order()] == ["a1", "b1", "a2", "a3"]
    first = claim_next_training("worker-1")
    assert first.name == "a1" and first.attempts == 1
    # Alice has one running now, so Bob's goes next.
    assert claim_next_training("worker-2").name == "b1"
    assert LoraTraining.objects.filter(pk=made[0].pk, status=Status.QUEUED).update(worker="x") == 0


# --- Running ---------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)  # the worker thread's own connection sees the committed rows
def test_a_real_worker_trains_a_lora_the_owner_then_uses_by_name(tiny_model, alice, broker, worker, settings):
    album = plus_album(alice, 3)
    training = submit_training(alice, {"name": "plsgn", "trigger": "plsgn", "album": album.pk, **FEW})
    broker.join(TRAINING_QUEUE, timeout=120_000)
    worker.join()
    training = wait_until_final(training)
    assert training.status == Status.SUCCEEDED, training.error_detail
    assert training.step == 4 and training.attempts == 1 and training.start_step == 0
    assert [point[0] for point in training.losses] == [1, 2, 3, 4]
    assert training.samples and training.samples_step == 4 and default_storage.exists(training.samples[0])
    lora = training.lora
    assert (lora.owner, lora.name, lora.base_model, lora.trigger_words) == (alice, "plsgn", tiny_model, "plsgn")
    assert lora.rank == 2 and lora.layer_count > 0 and len(lora.file_hash) == 64 and lora.key_format
    assert lora.training["training_id"] == training.pk and lora.training["steps"] == 4
    assert lora.visibility == Lora.Visibility.PRIVATE
    assert not training_queue.work_dir(training.pk).exists()  # the checkpoints went with the run
    job = submit_generation(alice, {"prompt": "plsgn, a plus <lora:plsgn:1>", "steps": 2})
    assert list(job.request.loras) == [("plsgn", 1.0)]
    broker.join("default", timeout=120_000)
    worker.join()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error_detail
    parameters = job.images.get().parameters
    assert "<lora:plsgn:1>" in parameters and f"Lora hashes: \"plsgn: {lora.short_hash}\"" in parameters


def test_cancelling_a_running_training_stops_it_after_a_step_and_makes_no_lora(tiny_model, alice):
    album = plus_album(alice, 2)
    training = submit_training(alice, {"name": "plsgn", "trigger": "plsgn", "album": album.pk, **FEW,
                                       "steps": 200})
    claimed = claim_next_training("worker-1")
    cancel_training(claimed)
    assert LoraTraining.objects.get(pk=training.pk).cancel_requested
    training_runner.execute_training(claimed, "worker-1")
    training.refresh_from_db()
    assert training.status == Status.CANCELLED and training.step < 200 and training.lora is None
    assert not Lora.objects.exists()


def test_cancelling_a_queued_training_is_immediate(tiny_model, alice):
    album = plus_album(alice, 1)
    training = cancel_training(submit_training(alice, {"name": "plsgn", "trigger": "plsgn", "album": album.pk}))
    assert training.status == Status.CANCELLED and training.finished_at is not None
    assert claim_next_training("worker-1") is None


class WorkerKilled(BaseException):
    """Stands for a SIGKILL: nothing of the runner's own handling runs after it."""


def test_a_training_whose_worker_died_resumes_from_its_checkpoint_then_fails_after_the_attempts(
        tiny_model, alice, settings, monkeypatch):
    settings.LDM_JOB_MAX_ATTEMPTS = 2
    album = plus_album(alice, 2)
    training = submit_training(alice, {"name": "plsgn", "trigger": "plsgn", "album": album.pk, **FEW,
                                       "steps": 8})  # a checkpoint every 2 steps
    real_publish = training_runner.events.publish_training

    def die_after_step_5(subject, event_type, **payload):
        if event_type == "training.progress" and payload["step"] >= 5:
            raise WorkerKilled
        return real_publish(subject, event_type, **payload)

    monkeypatch.setattr(training_runner, "PROGRESS_INTERVAL_SECONDS", 0)
    monkeypatch.setattr(training_runner.events, "publish_training", die_after_step_5)
    with pytest.raises(WorkerKilled):
        training_runner.execute_training(claim_next_training("worker-1"), "worker-1")
    monkeypatch.setattr(training_runner.events, "publish_training", real_publish)
    assert sorted(p.name for p in checkpoint_dir(training.pk).iterdir())[-1] == "lora-step-0000004.pt"

    LoraTraining.objects.filter(pk=training.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert recover_trainings()["retried"] == 1
    training.refresh_from_db()
    assert training.status == Status.QUEUED and training.nudged_at is not None
    more = plus_album(alice, 1).items.get().image
    AlbumItem.objects.create(album=album, image=more, position=99)  # the album changed meanwhile
    training_runner.execute_training(claim_next_training("worker-2"), "worker-2")
    training.refresh_from_db()
    assert training.status == Status.SUCCEEDED and training.attempts == 2
    assert training.start_step == 4  # resumed from the checkpoint (on the pictures it started with)
    assert training.image_count == 2
    assert [point[0] for point in training.losses] == list(range(1, 9))  # the curve has no gap or repeat

    stuck = submit_training(alice, {"name": "again", "trigger": "plsgn", "album": album.pk, **FEW})
    LoraTraining.objects.filter(pk=stuck.pk).update(status=Status.RUNNING, worker="gone", attempts=2,
                                                    heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert recover_trainings()["failed"] == 1
    stuck.refresh_from_db()
    assert stuck.status == Status.FAILED and "stopped responding 2 times" in stuck.error_message


# --- Who sees what ---------------------------------------------------------------------------------

def test_only_the_owner_and_staff_see_a_training_its_samples_and_its_stream(tiny_model, alice, bob, staff):
    album = plus_album(alice, 1)
    training = submit_training(alice, {"name": "plsgn", "trigger": "plsgn", "album": album.pk})
    name = default_storage.save("trainings/samples/test.png", ContentFile(plus_pngs(1)[0][0]))
    LoraTraining.objects.filter(pk=training.pk).update(samples=[name], samples_step=3)
    for person, expected in ((alice, 200), (staff, 200), (bob, 404)):
        client = Client()
        client.force_login(person)
        assert client.get(f"/loras/trainings/{training.pk}/").status_code == expected
        assert client.get(f"/loras/trainings/{training.pk}/samples.png").status_code == expected
        assert client.post(f"/loras/trainings/{training.pk}/cancel/").status_code in (
            (302,) if expected == 200 else (404,))
    assert Client().get(f"/loras/trainings/{training.pk}/").status_code == 302  # to sign in


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_training_stream_sends_a_snapshot_and_then_events_and_refuses_someone_else(
        tiny_model, alice, bob):
    from generation import events
    from tests.generation.test_consumers import close_code, open_socket

    album = await sync_to_async(plus_album)(alice, 1)
    training = await sync_to_async(submit_training)(alice, {"name": "plsgn", "trigger": "plsgn",
                                                            "album": album.pk})
    communicator, connected, _ = await open_socket(f"/ws/trainings/{training.pk}/", user=alice)
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot["type"] == "training.snapshot" and snapshot["status"] == "queued"
    assert snapshot["total"] == training_jobs.DEFAULT_STEPS and snapshot["position"] == 1
    await sync_to_async(events.publish_training)(training, "training.progress", step=1, total=2000, loss=0.5)
    event = await communicator.receive_json_from(timeout=5)
    assert event["type"] == "training.progress" and event["seq"] > snapshot["seq"] and event["loss"] == 0.5
    await communicator.disconnect()
    other, connected, _ = await open_socket(f"/ws/trainings/{training.pk}/", user=bob)
    assert connected and await close_code(other) == 4404
    anonymous, connected, _ = await open_socket(f"/ws/trainings/{training.pk}/")
    assert connected and await close_code(anonymous) == 4401


def test_the_train_form_starts_a_training_or_shows_the_refused_field_beside_it(tiny_model, alice):
    album = plus_album(alice, 1)
    client = Client()
    client.force_login(alice)
    page = client.get("/loras/train/")
    assert page.status_code == 200 and b"Pluses" in page.content and b'value="2000"' in page.content
    assert b'href="/loras/train/"' in client.get("/loras/").content
    refused = client.post("/loras/train/", {"source": "album", "album": album.pk, "name": "no spaces", "trigger": "t",
                                            "rank": "8", "steps": "4", "learning_rate": "1e-3", "batch_size": "2"})
    assert refused.status_code == 400
    assert b'data-field="name"' in refused.content and b'value="no spaces"' in refused.content
    started = client.post("/loras/train/", {"source": "album", "album": album.pk, "name": "plsgn", "trigger": "t",
                                            "rank": "8", "steps": "4", "learning_rate": "1e-3", "batch_size": "2"})
    training = LoraTraining.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/loras/trainings/{training.pk}/"
    page = client.get(started["Location"])
    assert b'id="loss-chart"' in page.content and b"js/training.js" in page.content
    assert b"<script>" not in page.content  # the CSP allows no inline script; the losses are JSON data
