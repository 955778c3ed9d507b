"""Batching across people on the full stack (PostgreSQL, Redis, daphne, rundramatiq workers): a worker
killed mid-batch has every job of its batch re-queued and finished exactly once (issue 28)."""

import time

import pytest

from tests.scale_out.conftest import FAST_RECOVERY
from tests.scale_out.harness import build_stack, kill_group

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def batching_stack(tmp_path, tiny_model_dir):
    stack = build_stack(tmp_path, tiny_model_dir, LDM_MAX_BATCH="4", LDM_BATCH_WINDOW_MS="50", **FAST_RECOVERY)
    yield stack
    stack.stop()


def test_a_worker_killed_mid_batch_has_every_job_re_queued_and_finished_once(batching_stack):
    stack = batching_stack
    people = ("ann", "ben", "cat")
    for name in people:
        stack.create_user(name)
    sessions = {name: stack.sign_in(name) for name in people}
    jobs = {name: stack.submit(sessions[name], steps=60, width=64, height=64, seed=10 * index, num_images=2)
            for index, name in enumerate(people)}
    first = stack.start_worker()  # after the submissions: its first message finds all three queued
    deadline = time.monotonic() + 180
    while True:
        rows = stack.query("SELECT id, status, worker, step FROM generation_generation ORDER BY id")
        if all(status == "running" for _, status, _, _ in rows) and any(step > 0 for *_, step in rows):
            break
        assert time.monotonic() < deadline, f"the batch did not start within 180 s: {rows}"
        time.sleep(0.1)
    assert len({worker for _, _, worker, _ in rows}) == 1, f"one worker runs the three jobs as a batch: {rows}"
    stack.start_worker()
    kill_group(first)  # SIGKILL mid-batch: no clean-up, the heartbeats just stop

    states = {}
    for name in people:
        states.update(stack.wait_until_final(sessions[name], [jobs[name]], timeout=400))
    for index, name in enumerate(people):
        state = states[jobs[name]]
        assert state["status"] == "succeeded", state
        assert sorted(image["seed"] for image in state["images"]) == [10 * index, 10 * index + 1], \
            "each image stored exactly once"
    attempts = stack.query("SELECT attempts FROM generation_generation ORDER BY id")
    assert attempts == [(2,), (2,), (2,)], "recovery re-queued each job of the batch once"
    assert all(stack.worker_running(job_id) is not first for job_id in jobs.values()), "the other worker finished them"
