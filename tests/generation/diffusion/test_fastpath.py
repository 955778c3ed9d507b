"""The GPU fast path (LDM_FAST_PATH): off changes nothing, on keeps images close, and it never stops a
job for a recompile (other sizes and LoRA jobs run the UNet uncompiled).

No GPU here, so "on" is exercised on the CPU with the tiny model: channels_last and SDPA for real, and
torch.compile with dynamo's "eager" backend -- the UNet's graph really captured and run through
dynamo's guards, without inductor's C++ code generation, which took 57 s for the tiny UNet on this
2-core machine with a cold cache (4 s warm): too slow for the suite. bench_gpu.py runs inductor.
"""

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured

from generation.diffusion import ModelLoadError, generate, load_pipeline, validate_request
from generation.diffusion.fastpath import apply_fast_path, fast_path_wanted, warm_up
from ldmsite.config import load_config

from .tiny import TINY_IMAGE_SIZE, build_tiny_lora_layers, tiny_lora_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ask(model, **fields):
    raw = {"prompt": "a red circle on white background", "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE,
           "steps": 3, "sampler": "Euler", "seed": 11, "guidance_scale": 5.0}
    raw.update(fields)
    return validate_request(raw, model.limits)


def pixels(result):
    return np.stack([np.asarray(image, dtype=np.int16) for image in result.images])


def test_ldm_fast_path_is_auto_by_default_and_a_bad_value_names_the_variable(tmp_path):
    assert load_config({"LDM_DATA_DIR": str(tmp_path)})["LDM_FAST_PATH"] == "auto"
    assert load_config({"LDM_DATA_DIR": str(tmp_path), "LDM_FAST_PATH": " OFF "})["LDM_FAST_PATH"] == "off"
    with pytest.raises(ImproperlyConfigured, match="LDM_FAST_PATH"):
        load_config({"LDM_DATA_DIR": str(tmp_path), "LDM_FAST_PATH": "fast"})


def test_auto_turns_the_fast_path_on_for_cuda_devices_only():
    assert fast_path_wanted("auto", "cuda")[0] is True
    assert fast_path_wanted("auto", "cpu") == (False, "auto: on for CUDA only, this model runs on cpu")
    assert fast_path_wanted("on", "cpu")[0] is True
    assert fast_path_wanted("off", "cuda")[0] is False


def test_a_model_loaded_with_the_fast_path_off_or_auto_on_a_cpu_makes_bit_identical_images(tiny_model_dir,
                                                                                         engine_model):
    before = generate(engine_model, ask(engine_model))
    for setting in ("off", "auto"):
        model = load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32", fast_path=setting)
        assert model.fast_path.enabled is False
        assert "forward" not in vars(model.pipeline.unet)  # the UNet's own forward, untouched
        result = generate(model, ask(model))
        assert np.array_equal(pixels(result), pixels(before))
        assert "fast_path" not in result.metadata[0]["model"]  # the record is what it was before


def test_an_unknown_fast_path_setting_is_a_load_error_that_names_the_choices(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="auto, on, off"):
        load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32", fast_path="turbo")


@pytest.fixture(scope="module")
def fast_model(tiny_model_dir, engine_model):
    plain = generate(engine_model, ask(engine_model))
    model = load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32")
    report = apply_fast_path(model, "on", compile_backend="eager")  # as at load: before the model's first job
    return model, report, plain


def test_the_fast_path_on_gives_close_images_through_the_unet_compiled_at_load_without_recompiling(fast_model):
    model, report, plain = fast_model
    import torch

    assert model.pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert report.compiled_shapes == [f"2x4x{TINY_IMAGE_SIZE // 2}x{TINY_IMAGE_SIZE // 2} float32"]
    calls = report.unet.compiled_calls
    with torch._dynamo.config.patch(error_on_recompile=True):  # the first job runs what the load compiled
        result = generate(model, ask(model))
    assert report.unet.compiled_calls == calls + 3  # every step of the default-size job ran compiled
    assert np.abs(pixels(result) - pixels(plain)).max() <= 2  # close, not equal: other kernels, other rounding
    recorded = result.metadata[0]["model"]["fast_path"]
    assert recorded["enabled"] is True and "channels_last: unet" in recorded["applied"]


def test_a_size_not_compiled_at_load_runs_uncompiled_until_it_is_warmed_up(fast_model):
    model, report, _ = fast_model
    compiled, eager = report.unet.compiled_calls, report.unet.eager_calls
    generate(model, ask(model, num_images=2))  # a UNet batch of 4: not compiled at load
    assert (report.unet.compiled_calls, report.unet.eager_calls) == (compiled, eager + 3)
    warm_up(model, images=(2,))
    generate(model, ask(model, num_images=2))
    assert report.unet.compiled_calls == compiled + 3


def test_a_job_with_a_lora_runs_the_unet_uncompiled_and_the_same_as_without_the_fast_path(tiny_model_dir, fast_model):
    model, report, _ = fast_model
    lora = tiny_lora_state_dict(build_tiny_lora_layers(model.pipeline, seed=4))
    reference = load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32")
    expected = generate(reference, ask(reference, loras=[["style", 0.8]]), loras={"style": lora})
    compiled = report.unet.compiled_calls
    result = generate(model, ask(model, loras=[["style", 0.8]]), loras={"style": lora})
    assert report.unet.compiled_calls == compiled
    assert np.abs(pixels(result) - pixels(expected)).max() <= 2


def test_a_unet_that_fails_to_compile_at_load_runs_uncompiled_instead_of_failing_the_model(tiny_model_dir, engine_model):
    def failing_compiler(graph, example_inputs):
        raise RuntimeError("this compiler cannot build the UNet")

    model = load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32")
    report = apply_fast_path(model, "on", compile_backend=failing_compiler)
    assert report.unet is None and "forward" not in vars(model.pipeline.unet)
    assert any(step.startswith("torch.compile failed at warm-up") for step in report.applied)
    result = generate(model, ask(model))
    assert np.abs(pixels(result) - pixels(generate(engine_model, ask(engine_model)))).max() <= 2
