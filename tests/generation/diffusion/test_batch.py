"""Batching across people (generation/diffusion/batch.py): one UNet batch, every image exactly its
job's image alone, per-job cancel and failure."""

from pathlib import Path

import numpy as np
import pytest
import torch

from generation.diffusion import (GenerationCancelled, PerSampleScale, UnsupportedRequest, batch_key, generate,
                                  generate_batch, validate_request)

from .tiny import TINY_IMAGE_SIZE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUILTIN = Path(__file__).resolve().parents[3] / "generation" / "builtin_model"


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def same_images(result, other) -> bool:
    return len(result.images) == len(other.images) and all(
        np.array_equal(pixels(a), pixels(b)) for a, b in zip(result.images, other.images))


@pytest.fixture(scope="module")
def builtin():
    from generation.diffusion import load_pipeline

    return load_pipeline(str(BUILTIN), device="cpu", dtype="fp32")


def tiny_requests(model, sampler="Euler", **common):
    base = {"width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE, "steps": 4, "sampler": sampler, **common}
    return [validate_request({**base, **fields}, model.limits) for fields in (
        {"prompt": "a red circle on white background", "seed": 7, "guidance_scale": 5.0},
        {"prompt": "a blue square", "negative_prompt": "green", "seed": 123, "guidance_scale": 7.5, "num_images": 2},
        {"prompt": "a (green:1.3) circle on black background", "seed": 4, "guidance_scale": 3.0},
    )]


def builtin_requests(model, steps=8):
    """Different people's requests at the built-in model's defaults (Euler Karras, autoguidance on)."""
    return [validate_request({"steps": steps, **fields}, model.limits) for fields in (
        {"prompt": "a red circle", "seed": 3},
        {"prompt": "a blue square on a black background", "seed": 11, "guidance_scale": 3.0, "num_images": 2},
        {"prompt": "a green triangle", "seed": 5, "autoguidance_scale": 2.0, "negative_prompt": "blue"},
        {"prompt": "a small yellow circle", "seed": 9},
    )]


def test_the_built_in_model_makes_every_batched_image_bit_identical_to_its_job_alone(builtin):
    requests = builtin_requests(builtin)
    assert len({batch_key(request) for request in requests}) == 1, "the premise: one batch"
    alone = [generate(builtin, request) for request in requests]
    batched = generate_batch(builtin, requests)
    for result, other in zip(alone, batched):
        assert same_images(result, other)
        assert other.seeds == result.seeds
        assert other.metadata[0]["batch"] == {"requests": 4, "samples": 5}
        assert other.metadata[0]["kernels"] == result.metadata[0]["kernels"] == "batch-invariant"


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M Karras", "Euler a", "Heun"])
def test_tiny_components_make_every_batched_image_bit_identical_to_its_job_alone(engine_model, sampler):
    requests = tiny_requests(engine_model, sampler)
    batched = generate_batch(engine_model, requests)
    for request, result in zip(requests, batched):
        assert same_images(generate(engine_model, request), result), request.prompt
        assert result.metadata[0]["batch"]["requests"] == 3


@pytest.mark.parametrize("sampler", ["Euler Karras", "DPM++ 2M Karras"])
def test_cancelling_one_job_of_a_batch_leaves_the_others_images_unchanged(builtin, sampler):
    """Also with a multistep sampler, whose history loses the cancelled job's rows."""
    requests = [validate_request({**vars_of(request), "sampler": sampler}, builtin.limits)
                for request in builtin_requests(builtin)]
    alone = [generate(builtin, request) for request in requests]
    reached = [0] * len(requests)

    def progress(index):
        def record(step):
            reached[index] = step.step
        return record

    outcomes = generate_batch(builtin, requests, on_progress=[progress(i) for i in range(len(requests))],
                              should_cancel=[None, lambda: reached[1] >= 3, None, None])
    cancelled = outcomes[1]
    assert isinstance(cancelled, GenerationCancelled)
    assert cancelled.step == 4 and reached[1] == 3, "it left at the next step"
    assert len(cancelled.result.images) == 2 and cancelled.result.metadata[0]["interrupted"]
    for index in (0, 2, 3):
        assert same_images(alone[index], outcomes[index])
        assert reached[index] == requests[index].steps


def vars_of(request):
    return {key: value for key, value in request.to_dict().items() if key in ("prompt", "negative_prompt", "seed",
            "guidance_scale", "autoguidance_scale", "num_images", "steps")}


def test_a_job_whose_progress_fails_fails_alone_and_its_companions_succeed(engine_model):
    requests = tiny_requests(engine_model)

    def broken(step):
        raise RuntimeError("the publisher is gone")

    outcomes = generate_batch(engine_model, requests, on_progress=[None, broken, None])
    assert isinstance(outcomes[1], RuntimeError)
    assert same_images(generate(engine_model, requests[0]), outcomes[0])
    assert same_images(generate(engine_model, requests[2]), outcomes[2])


def test_a_request_the_model_cannot_serve_gets_its_own_error_and_the_others_run(engine_model):
    """The tiny model has no guide UNet: an autoguided request (validated for another model) is
    refused, naming the field."""
    import dataclasses

    requests = tiny_requests(engine_model)
    limits = dataclasses.replace(engine_model.limits, has_guide_unet=True)
    refused = validate_request({**vars_of(requests[0]), "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE,
                                "sampler": "Euler", "autoguidance_scale": 1.0}, limits)
    outcomes = generate_batch(engine_model, [requests[0], refused, requests[2]])
    assert isinstance(outcomes[1], UnsupportedRequest) and str(outcomes[1]).startswith("autoguidance_scale")
    assert same_images(generate(engine_model, requests[0]), outcomes[0])
    assert not isinstance(outcomes[2], BaseException)


def test_requests_of_other_sizes_or_with_clip_guidance_run_alone_in_the_same_call(engine_model):
    base = tiny_requests(engine_model)[0]
    other_size = validate_request({**vars_of(base), "width": 2 * TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE,
                                   "sampler": "Euler"}, engine_model.limits)
    guided = validate_request({**vars_of(base), "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE, "sampler": "Euler",
                               "clip_guidance_scale": 100, "clip_guidance_every": 2}, engine_model.limits)
    assert batch_key(guided) is None and batch_key(other_size) != batch_key(base)
    outcomes = generate_batch(engine_model, [base, other_size, guided])
    assert outcomes[1].images[0].size == (2 * TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert all("batch" not in outcome.metadata[0] for outcome in outcomes)
    assert same_images(generate(engine_model, guided), outcomes[2])


def test_a_per_sample_scale_multiplies_each_row_by_its_own_float():
    rows = torch.randn(4, 3)
    scale = PerSampleScale([1.5, 1.5, 7.3, 2.0])
    expected = torch.cat([rows[:2] * 1.5, rows[2:3] * 7.3, rows[3:] * 2.0])
    assert torch.equal(scale * rows, expected) and torch.equal(rows.__rmul__(1.0) * 0 + scale * rows, expected)
    scale.keep([2])
    assert torch.equal(scale * rows[2:3], rows[2:3] * 7.3)
