"""Scale-out end to end: PostgreSQL, Redis, daphne and separate `rundramatiq` worker processes.
A client signs in, submits, and receives progress previews over a real websocket from a worker
process; workers killed with SIGKILL mid-job leave no job stuck and no image duplicated."""

import pytest

pytestmark = pytest.mark.timeout(900)

from tests.scale_out.harness import follow, kill_group, run_async


def test_a_worker_process_streams_previews_to_a_websocket_client_through_redis(stack):
    stack.start_worker()
    stack.create_user("erin")
    session = stack.sign_in("erin")
    job_id = stack.submit(session, steps=6)
    messages = run_async(follow(stack, session, f"/ws/generations/{job_id}/",
                                  lambda ms: any(m["type"] == "generation.succeeded" for m in ms)))
    assert messages[0]["type"] == "generation.snapshot"
    progress = [m for m in messages if m["type"] == "generation.progress"]
    assert progress and progress[-1]["step"] == 6
    assert all(m["preview"].startswith("data:image/png;base64,") for m in progress)
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs)
    image = messages[-1]["images"][0]
    assert session.get(stack.url + image["url"]).headers["Content-Type"] == "image/png"


def test_a_job_whose_worker_is_killed_finishes_on_the_other_worker_without_duplicates(stack):
    stack.start_worker()
    stack.start_worker()
    stack.create_user("erin")
    session = stack.sign_in("erin")
    job_id = stack.submit(session, steps=80, width=64, height=64, num_images=2)
    run_async(follow(stack, session, f"/ws/generations/{job_id}/",
                       lambda ms: any(m["type"] == "generation.progress" for m in ms)))
    running_on = stack.job(session, job_id)
    assert running_on["status"] == "running"
    # Kill the worker process that runs it (the other one is idle); SIGKILL allows no clean-up.
    killed = stack.worker_running(job_id)
    kill_group(killed)

    state = stack.wait_until_final(session, [job_id], timeout=240)[job_id]
    assert state["status"] == "succeeded", state
    assert sorted(image["seed"] for image in state["images"]) == [5, 6], "each image stored exactly once"
    assert stack.query("SELECT attempts FROM generation_generation WHERE id = %s", [job_id]) == [(2,)], \
        "the recovery loop re-queued it once"
    assert stack.worker_running(job_id) is not killed, "the other worker finished it"
