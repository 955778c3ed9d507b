"""Shared tiny-model fixtures for the diffusion engine tests (built once per session, offline)."""

from __future__ import annotations

import pytest

from .tiny import TINY_IMAGE_SIZE, build_tiny_pipeline


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine OpenMP
    threads spinning against other processes made steps several times slower (measured: a tiny
    UNet step 0.04 s with one thread, 0.2 s with two). Engine test modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny StableDiffusionPipeline directory with a CLIP model in clip/."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def engine_model(tiny_model_dir):
    """The tiny model loaded by the engine, in fp32 on the CPU (shared: tests must not mutate it)."""
    from generation.diffusion import load_pipeline

    return load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32")


@pytest.fixture
def make_request(engine_model):
    """``make_request(**fields)``: a validated request with small defaults for the tiny model."""
    from generation.diffusion import validate_request

    def make(**fields):
        raw = {"prompt": "a red circle on white background", "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE,
               "steps": 4, "sampler": "Euler", "seed": 7, "guidance_scale": 5.0}
        raw.update(fields)
        return validate_request(raw, engine_model.limits)

    return make
