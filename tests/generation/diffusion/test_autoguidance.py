"""Autoguidance on tiny seeded models: the guide UNet is found, the prediction is pushed away from it
by the requested amount, and requests for it are refused by field where a model has no guide."""

import shutil

import numpy as np
import pytest
import torch

from generation.diffusion import RequestValidationError, generate, load_pipeline, parse_parameters, validate_request
from generation.diffusion.autoguidance import AutoguidedUNet

from .tiny import TINY_IMAGE_SIZE, build_tiny_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def guided_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with another seed's UNet as its guide."""
    path = tmp_path_factory.mktemp("guided") / "model"
    shutil.copytree(tiny_model_dir, path)
    build_tiny_components(seed=1)["unet"].save_pretrained(path / "guide_unet")
    return load_pipeline(str(path), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def self_guided_model(tiny_model_dir, tmp_path_factory):
    """The tiny model guided by a copy of its own UNet: autoguidance has nothing to correct."""
    path = tmp_path_factory.mktemp("self-guided") / "model"
    shutil.copytree(tiny_model_dir, path)
    shutil.copytree(path / "unet", path / "guide_unet")
    return load_pipeline(str(path), device="cpu", dtype="fp32")


def request_for(model, **fields):
    raw = {"prompt": "a red circle on white background", "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE,
           "steps": 4, "sampler": "Euler", "seed": 7, "guidance_scale": 5.0}
    return validate_request({**raw, **fields}, model.limits)


def pixels(result):
    return np.asarray(result.images[0], dtype=np.int16)


def test_a_model_directory_with_a_guide_unet_folder_offers_autoguidance(guided_model, engine_model):
    assert guided_model.guide_unet is not None and guided_model.limits.has_guide_unet
    assert guided_model.describe()["guide_unet"] is True
    assert guided_model.nbytes > engine_model.nbytes
    assert engine_model.guide_unet is None and not engine_model.limits.has_guide_unet


def test_autoguidance_is_refused_by_field_for_a_model_without_a_guide_unet(engine_model):
    with pytest.raises(RequestValidationError) as error:
        request_for(engine_model, autoguidance_scale=1.0)
    assert "guide UNet" in error.value.errors["autoguidance_scale"]
    assert request_for(engine_model).autoguidance_scale == 0.0


@pytest.mark.parametrize("value", [-1, 11, "a lot", float("nan")])
def test_an_autoguidance_scale_out_of_range_names_the_field_and_its_range(guided_model, value):
    with pytest.raises(RequestValidationError) as error:
        request_for(guided_model, autoguidance_scale=value)
    assert "from 0 to 10" in error.value.errors["autoguidance_scale"]


@pytest.mark.parametrize("guidance_scale", [5.0, 1.0])
def test_the_prediction_moves_away_from_the_guide_by_the_autoguidance_scale(guided_model, guidance_scale):
    """What the pipeline makes of the wrapped UNet's output is u + g(c - u) + a(c - b), with and
    without a classifier-free (unconditional) half in the batch."""
    unet, guide = guided_model.pipeline.unet, guided_model.guide_unet
    scale = 1.5
    wrapped = AutoguidedUNet(unet, guide, scale, guidance_scale)
    torch.manual_seed(0)
    halves = 2 if guidance_scale > 1 else 1
    sample = torch.randn(halves, 4, 8, 8)
    text = torch.randn(halves, 8, unet.config.cross_attention_dim)
    t = torch.tensor(500)
    with torch.no_grad():
        out = wrapped(sample, t, text, return_dict=False)[0]
        prediction = unet(sample, t, text).sample
        c = prediction[-1:]
        b = guide(sample[-1:], t, text[-1:]).sample
    assert not torch.allclose(c, b, atol=1e-3)  # the two UNets disagree, so the test can fail
    if halves == 2:
        u = prediction[:1]
        assert torch.equal(out[:1], u)
        combined = u + guidance_scale * (out[1:] - u)
        torch.testing.assert_close(combined, u + guidance_scale * (c - u) + scale * (c - b), rtol=1e-4, atol=1e-5)
    else:
        torch.testing.assert_close(out, c + scale * (c - b), rtol=1e-4, atol=1e-5)


def test_a_guide_identical_to_the_model_leaves_the_image_as_it_was(self_guided_model):
    off = generate(self_guided_model, request_for(self_guided_model, autoguidance_scale=0))
    on = generate(self_guided_model, request_for(self_guided_model, autoguidance_scale=2.0))
    assert np.abs(pixels(off) - pixels(on)).max() <= 1


@pytest.mark.parametrize("guidance_scale", [5.0, 1.0])
def test_autoguidance_changes_the_image_and_the_png_parameters_say_how_much(guided_model, guidance_scale):
    off = generate(guided_model, request_for(guided_model, guidance_scale=guidance_scale))
    on = generate(guided_model, request_for(guided_model, guidance_scale=guidance_scale, autoguidance_scale=1.5))
    assert np.abs(pixels(off) - pixels(on)).mean() > 1
    assert "Autoguidance scale" not in off.parameters[0]
    assert on.metadata[0]["autoguidance_scale"] == 1.5
    fields, _ = parse_parameters(on.parameters[0])
    assert fields["autoguidance_scale"] == 1.5
    again = generate(guided_model, validate_request({**fields, "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE},
                                                    guided_model.limits))
    assert np.array_equal(pixels(again), pixels(on))  # the PNG's parameters reproduce the image


def test_the_engine_refuses_autoguidance_on_a_model_without_a_guide_even_past_validation(guided_model, engine_model):
    request = request_for(guided_model, autoguidance_scale=1.0)
    with pytest.raises(ValueError, match="guide UNet"):
        generate(engine_model, request)


def test_an_sdxl_model_with_a_guide_unet_is_autoguided_too(tmp_path):
    """SDXL's UNet takes per-sample extras (pooled text, size ids) that the guide must get for the
    conditional half only."""
    from .tiny import build_tiny_sdxl_pipeline

    path = build_tiny_sdxl_pipeline(tmp_path / "sdxl")
    guide_path = build_tiny_sdxl_pipeline(tmp_path / "other", seed=1)
    shutil.copytree(guide_path / "unet", path / "guide_unet")
    model = load_pipeline(str(path), dtype="fp32")
    fields = {"prompt": "a green square", "width": 32, "height": 32, "steps": 2, "sampler": "Euler", "seed": 3,
              "guidance_scale": 4.0}
    off = generate(model, validate_request(fields, model.limits))
    on = generate(model, validate_request({**fields, "autoguidance_scale": 2.0}, model.limits))
    assert np.abs(pixels(off) - pixels(on)).mean() > 1
