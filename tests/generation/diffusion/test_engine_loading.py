"""Loading models, and choosing device and precision."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from generation.diffusion import ModelLoadError, choose_device_and_dtype, load_pipeline
from generation.diffusion.hashing import directory_content_hash


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_model_loads_from_a_saved_directory(tiny_model_dir, engine_model):
    model = engine_model
    assert model.pipeline_class == "StableDiffusionPipeline"
    assert model.name == tiny_model_dir.name and model.source == str(tiny_model_dir)
    assert model.family == "custom"  # not an SD1.x-sized UNet
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert len(model.content_hash) == 64 and model.short_hash == model.content_hash[:10]
    assert model.clip is not None and model.clip.image_size == 32  # clip/ picked up by convention
    assert model.limits.default_width == 32 and model.limits.has_clip
    assert model.nbytes > 0 and model.load_seconds > 0
    assert model.scheduler_config["_class_name"] == "PNDMScheduler"


def test_the_safety_checker_is_not_loaded(engine_model):
    assert engine_model.pipeline.safety_checker is None


def test_the_content_hash_follows_the_weights(tiny_model_dir, tmp_path, engine_model):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert load_pipeline(str(copy), dtype="fp32").content_hash == engine_model.content_hash
    config = copy / "unet" / "config.json"
    config.write_text(config.read_text().replace('"layers_per_block": 1', '"layers_per_block":1'))
    assert load_pipeline(str(copy), dtype="fp32").content_hash != engine_model.content_hash


def test_a_model_card_does_not_change_the_model_hash(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    before = directory_content_hash(copy)
    (copy / "README.md").write_text("# A model card, edited as often as anyone likes\n")
    (copy / "unet" / "NOTES.md").write_text("training notes\n")
    assert directory_content_hash(copy) == before


def test_latent_preview_json_next_to_the_model_is_used(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "with-preview")
    factors = {"matrix": [[0.1, 0.2, 0.3]] * 4, "bias": [0.0, 0.1, 0.2]}
    (copy / "latent_preview.json").write_text(json.dumps(factors))
    model = load_pipeline(str(copy), dtype="fp32", clip_source=False)
    assert model.latent_preview().source.startswith("file:")
    loaded = model.latent_preview()
    assert torch.allclose(loaded.matrix, torch.tensor(factors["matrix"]))
    assert torch.allclose(loaded.bias, torch.tensor(factors["bias"]))


def test_a_model_directory_states_its_own_defaults_in_ldmsite_defaults_json(tiny_model_dir, tmp_path, engine_model):
    from generation.diffusion import validate_request

    copy = shutil.copytree(tiny_model_dir, tmp_path / "with-defaults")
    (copy / "ldmsite_defaults.json").write_text(json.dumps({
        "_comment": "keys starting with _ are comments", "default_sampler": "DPM++ 2M Karras",
        "default_guidance_scale": 2, "default_steps": 9, "default_width": 48, "max_height": 64,
    }))
    model = load_pipeline(str(copy), dtype="fp32", clip_source=False)
    limits = model.limits
    assert (limits.default_sampler, limits.default_guidance_scale, limits.default_steps) == ("DPM++ 2M Karras", 2.0, 9)
    assert (limits.default_width, limits.default_height, limits.max_height) == (48, 32, 64)
    assert (limits.min_width, limits.min_height) == (48, 32)  # small models go below 64 px, to their default
    request = validate_request({"prompt": "a red circle", "seed": 2}, limits)
    assert (request.sampler, request.guidance_scale, request.steps, request.width, request.height) == \
        ("DPM++ 2M Karras", 2.0, 9, 48, 32)
    # Defaults never change what a given request makes, so they are not part of the model's hash.
    assert model.content_hash == engine_model.content_hash


@pytest.mark.parametrize("content, key, words", [
    ('{"default_sampler": "Euler Karras",}', None, "not readable JSON"),
    ('["Euler Karras"]', None, "one JSON object"),
    ('{"sampler": "Euler Karras"}', "sampler", "not a known default"),
    ('{"default_sampler": "Euler b"}', "default_sampler", "must be one of"),
    ('{"default_guidance_scale": "1.5"}', "default_guidance_scale", "a number from 0 to 30"),
    ('{"default_autoguidance_scale": 11}', "default_autoguidance_scale", "a number from 0 to 10"),
    ('{"default_steps": 0}', "default_steps", "positive whole number"),
    ('{"default_width": 60}', "default_width", "multiple of 8"),
    ('{"max_steps": true}', "max_steps", "positive whole number"),
    ('{"default_steps": 40, "max_steps": 30}', "default_steps", "above max_steps"),
    ('{"max_width": 16}', "max_width", "above max_width"),  # below the UNet's native 32 px default
])
def test_a_malformed_defaults_file_is_a_load_error_naming_the_file_and_the_key(tiny_model_dir, tmp_path, content,
                                                                               key, words):
    from generation.diffusion import ModelDefaultsError

    copy = shutil.copytree(tiny_model_dir, tmp_path / "bad-defaults")
    (copy / "ldmsite_defaults.json").write_text(content)
    with pytest.raises(ModelLoadError) as caught:
        load_pipeline(str(copy), dtype="fp32", clip_source=False)
    message = str(caught.value)
    assert isinstance(caught.value, ModelDefaultsError) and caught.value.key == key
    assert str(copy / "ldmsite_defaults.json") in message and words in message
    assert key is None or f"key '{key}'" in message
    assert caught.value.source == str(copy)


def test_an_unreachable_hub_id_fails_with_a_clear_error():
    with pytest.raises(ModelLoadError) as caught:
        load_pipeline("ldmsite-tests/no-such-model", local_files_only=True)
    message = str(caught.value)
    assert "ldmsite-tests/no-such-model" in message
    assert "Hugging Face Hub" in message and "local diffusers directory" in message
    assert caught.value.source == "ldmsite-tests/no-such-model"


def test_a_network_failure_becomes_the_same_clear_error(monkeypatch):
    import diffusers

    def unreachable(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "download", unreachable)
    with pytest.raises(ModelLoadError, match="could not reach the Hugging Face Hub.*ldmsite-tests/offline") as caught:
        load_pipeline("ldmsite-tests/offline")
    assert "hf download ldmsite-tests/offline" in str(caught.value)


def test_a_missing_directory_fails_with_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_pipeline(str(tmp_path / "nowhere"))


def test_a_directory_that_is_not_a_diffusers_pipeline_is_explained(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_pipeline(str(tmp_path))


def test_missing_weights_are_reported_not_raised_raw(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    for weights in (copy / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match="missing or incomplete"):
        load_pipeline(str(copy), dtype="fp32")


def test_unsupported_pipeline_classes_are_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelLoadError, match="FluxPipeline"):
        load_pipeline(str(tmp_path))


def test_precision_settings_map_to_dtypes_and_are_explained():
    assert choose_device_and_dtype("fp32", "cpu").dtype == torch.float32
    assert choose_device_and_dtype("bf16", "cpu").dtype == torch.bfloat16
    assert choose_device_and_dtype("fp16", "cpu").dtype == torch.float16
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        choose_device_and_dtype("int8")
    metadata = choose_device_and_dtype("fp32", "cpu").to_dict()
    assert metadata["dtype"] == "fp32" and metadata["device"] == "cpu" and metadata["precision_reason"]


def test_auto_precision_on_cpu_uses_bf16_only_with_hardware_bf16(monkeypatch):
    from generation.diffusion import precision

    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16",))
    chosen = precision.choose_device_and_dtype("auto", "cpu")
    assert chosen.dtype == torch.bfloat16 and "amx_bf16" in chosen.reason
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    assert precision.choose_device_and_dtype("auto", "cpu").dtype == torch.float32


def test_a_model_loads_in_bf16_when_asked(tiny_model_dir):
    model = load_pipeline(str(tiny_model_dir), dtype="bf16", clip_source=False)
    assert model.pipeline.unet.dtype == torch.bfloat16 and model.precision.setting == "bf16"


BUILTIN = Path(__file__).resolve().parents[3] / "generation" / "builtin_model"


def test_the_builtin_model_loads_with_its_clip_and_preview_factors():
    from generation.diffusion import generate, validate_request

    model = load_pipeline(str(BUILTIN), dtype="fp32")
    assert model.clip.name == str(BUILTIN / "clip") and model.clip.image_size == 64 and model.limits.has_clip
    assert model.latent_preview().source.startswith("file:")
    request = validate_request({"prompt": "a red circle on a blue background", "steps": 2, "seed": 1,
                                "sampler": "DDIM"}, model.limits)
    progress = []
    result = generate(model, request, on_progress=progress.append)
    side = model.limits.default_width // model.pipeline.vae_scale_factor
    assert progress[-1].preview.size == (side, side)
    assert result.images[0].size == (model.limits.default_width, model.limits.default_height)
    assert 0 <= result.clip_scores[0] <= 100


def test_auto_precision_keeps_whichever_precision_it_measured_faster_and_says_so(tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    from generation.diffusion import loading

    monkeypatch.setattr(loading, "_MEASURED", {})
    remembered = tmp_path / "precision.json"
    model = load_pipeline(str(tiny_model_dir), clip_source=False, precision_cache=remembered)
    timings = model.precision.measured
    assert set(timings) == {"fp32", "bf16"} and all(seconds > 0 for seconds in timings.values())
    fastest = min(timings, key=timings.get)
    assert model.precision.dtype_name == fastest and model.pipeline.unet.dtype == model.dtype
    assert "measured" in model.precision.reason and "fp32" in model.precision.reason and "bf16" in model.precision.reason
    assert model.describe()["precision"]["precision_timings"] == timings
    assert list(json.loads(remembered.read_text()).values()) == [timings]

    # Another process (an empty in-process memory) reads the measurement instead of timing again, and
    # follows it: here the file says bf16 was the faster one.
    monkeypatch.setattr(loading, "_MEASURED", {})
    key = next(iter(json.loads(remembered.read_text())))
    remembered.write_text(json.dumps({key: {"fp32": 0.02, "bf16": 0.01}}))

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("measured again although the timings were remembered")

    monkeypatch.setattr(loading, "measure_precision", no_second_measurement)
    again = load_pipeline(str(tiny_model_dir), clip_source=False, precision_cache=remembered)
    assert again.dtype == torch.bfloat16 and again.pipeline.unet.dtype == torch.bfloat16
    assert again.precision.measured == {"fp32": 0.02, "bf16": 0.01}


def test_an_explicit_precision_is_not_measured(tiny_model_dir, monkeypatch):
    from generation.diffusion import loading

    monkeypatch.setattr(loading, "measure_precision", lambda *a, **k: pytest.fail("measured an explicit setting"))
    model = load_pipeline(str(tiny_model_dir), dtype="fp32", clip_source=False)
    assert model.dtype == torch.float32 and model.precision.measured == {}
