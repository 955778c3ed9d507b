"""A LoRA training on the full stack (PostgreSQL, Redis, daphne, rundramatiq workers): its worker is
killed (SIGKILL) after a checkpoint, and another worker takes it up from that checkpoint and
finishes it once."""

import io
import time
import zipfile

import pytest

from tests.scale_out.conftest import FAST_RECOVERY
from tests.scale_out.harness import build_stack, kill_group

pytestmark = pytest.mark.timeout(900)  # whole-stack start-up and recovery on 2 shared cores


def plus_zip() -> bytes:
    from PIL import Image

    from generation.diffusion import dataset

    images, specs = dataset.generate(4, 0, {"shape": "plus"})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (image, spec) in enumerate(zip(images, specs)):
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            archive.writestr(f"plus_{index}.png", png.getvalue())
            archive.writestr(f"plus_{index}.txt", dataset.caption(spec.attributes()))
    return buffer.getvalue()


def training_row(stack, training_id: int) -> dict:
    columns = ("status", "step", "start_step", "attempts", "worker", "lora_id", "error_detail")
    row = stack.query(f"SELECT {', '.join(columns)} FROM generation_loratraining WHERE id = %s", (training_id,))[0]
    return dict(zip(columns, row))


@pytest.fixture
def stack(tmp_path, tiny_model_dir):
    """The stack with one torch thread per worker: on the shared 2-core test machine, OpenMP threads
    spinning against the other worker and the web tier made each tiny step take seconds."""
    stack = build_stack(tmp_path, tiny_model_dir, **FAST_RECOVERY, LDM_TORCH_THREADS="1")
    yield stack
    stack.stop()


def test_a_training_whose_worker_is_killed_resumes_on_another_worker_from_its_checkpoint(stack):
    stack.start_worker()
    session = stack.sign_in_as_new("tam")
    response = session.post(stack.url + "/loras/train/", data={
        "source": "zip", "name": "plsgn", "trigger": "plsgn", "base_model": "tiny", "rank": "2", "steps": "80",
        "learning_rate": "5e-3", "batch_size": "2", "seed": "0"},
        files={"images": ("pluses.zip", plus_zip(), "application/zip")},
        headers={"Accept": "application/json", "X-CSRFToken": session.cookies["csrftoken"],
                 "Referer": stack.url + "/loras/train/"})
    assert response.status_code == 202, response.text[:500]
    training_id = response.json()["training"]

    deadline = time.monotonic() + 240
    while (row := training_row(stack, training_id))["step"] < 22:  # an 80-step run checkpoints every 20 steps
        assert time.monotonic() < deadline and row["status"] in ("queued", "running"), row
        time.sleep(0.2)
    first_worker = row["worker"]
    kill_group(stack.workers[0])  # SIGKILL: no handler of the worker runs
    stack.start_worker()

    deadline = time.monotonic() + 400
    while (row := training_row(stack, training_id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, row
        time.sleep(0.5)
    assert row["status"] == "succeeded", row["error_detail"]
    assert row["attempts"] == 2 and row["worker"] != first_worker
    assert row["start_step"] >= 20, "the second worker started from the checkpoint, not from step 0"
    assert row["step"] == 80
    assert stack.query("SELECT count(*) FROM gallery_lora WHERE name = 'plsgn'")[0][0] == 1, "finished once"
    state = session.get(f"{stack.url}/loras/trainings/{training_id}/", headers={"Accept": "application/json"}).json()
    assert state["lora"]["prompt_tag"] == "<lora:plsgn:1>"
    assert [point[0] for point in state["losses"]][-1] == 80
