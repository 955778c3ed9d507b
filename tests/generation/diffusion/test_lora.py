"""LoRAs in the engine: both key formats, refusal of a LoRA for another model, weights, the base
model untouched after, kohya export, A1111's <lora:name:weight> tags and ``Lora hashes``."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import torch

from generation.diffusion import (GenerationRequest, RequestValidationError, UnsupportedRequest, generate,
                                  load_pipeline, read_png_metadata, validate_request, write_png)
from generation.diffusion.lora import (LoraFileError, LoraMismatch, adapter_state, check_lora, loaded_adapters,
                                       lora_hash, read_lora, save_lora, to_kohya, use_loras)
from generation.diffusion.pngmeta import parse_lora_hashes, parse_parameters
from generation.diffusion.request import check_lora_names, parse_lora_tags

from .tiny import TINY_IMAGE_SIZE, build_tiny_lora_layers, tiny_lora_state_dict, with_engine_kernels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    """The tiny model loaded for this module alone: LoRA jobs load adapters into it."""
    return load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def layers(lora_model):
    return {seed: build_tiny_lora_layers(lora_model.pipeline, seed=seed) for seed in (1, 2)}


@pytest.fixture(scope="module")
def plain_before(lora_model):
    """The plain job's pixels before any LoRA was loaded into the model."""
    return pixels(generate(lora_model, ask(lora_model)))


def ask(model, **fields) -> GenerationRequest:
    raw = {"prompt": "a red circle on white background", "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE,
           "steps": 3, "sampler": "Euler", "seed": 7, "guidance_scale": 5.0}
    raw.update(fields)
    return validate_request(raw, model.limits)


def pixels(result):
    return np.asarray(result.images[0], dtype=np.int16)


def test_a_lora_in_kohya_keys_and_in_diffusers_keys_gives_the_same_image(lora_model, layers, plain_before, tmp_path):
    kohya = save_lora(tiny_lora_state_dict(layers[1], "kohya"), tmp_path / "k.safetensors")
    peft = save_lora(tiny_lora_state_dict(layers[1], "diffusers"), tmp_path / "p.safetensors")
    from_kohya = generate(lora_model, ask(lora_model, loras=[["style", 1]]), loras={"style": kohya})
    from_peft = generate(lora_model, ask(lora_model, loras=[["style", 1]]), loras={"style": peft})
    assert np.array_equal(pixels(from_kohya), pixels(from_peft))
    assert np.abs(pixels(from_kohya) - plain_before).max() > 10  # the LoRA changes the picture


def test_the_engine_applies_a_lora_as_plain_diffusers_loads_it(tiny_model_dir, lora_model, layers, tmp_path):
    """A diffusers-format file through the engine is pixel for pixel plain diffusers'
    ``load_lora_weights`` of the same file."""
    import diffusers

    peft = save_lora(tiny_lora_state_dict(layers[2], "diffusers"), tmp_path / "p.safetensors")
    request = ask(lora_model, loras=[["p", 1]])
    result = generate(lora_model, request, loras={"p": peft})
    pipe = with_engine_kernels(diffusers.StableDiffusionPipeline.from_pretrained(
        tiny_model_dir, safety_checker=None, requires_safety_checker=False))
    recorded = result.metadata[0]["scheduler"]
    pipe.scheduler = getattr(diffusers, recorded["class"]).from_config(recorded["config"])
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(peft))
    expected = pipe(request.prompt, height=request.height, width=request.width, num_inference_steps=request.steps,
                    guidance_scale=request.guidance_scale, generator=[torch.Generator("cpu").manual_seed(7)]).images
    assert np.array_equal(pixels(result), np.asarray(expected[0], dtype=np.int16))


def test_a_job_without_lora_after_lora_jobs_is_bit_identical_to_before_any_lora(lora_model, layers, plain_before):
    generate(lora_model, ask(lora_model, prompt="a red circle <lora:one:0.8> <lora:two:-0.5>"),
             loras={"one": tiny_lora_state_dict(layers[1]), "two": tiny_lora_state_dict(layers[2])})
    assert loaded_adapters(lora_model)  # the adapters stay loaded for the next LoRA job...
    after = pixels(generate(lora_model, ask(lora_model)))
    assert np.array_equal(after, plain_before)  # ...and a plain job does not see them


def test_two_loras_at_once_differ_from_each_alone_and_weight_zero_is_no_lora(lora_model, layers, plain_before):
    files = {"one": tiny_lora_state_dict(layers[1]), "two": tiny_lora_state_dict(layers[2])}
    one = pixels(generate(lora_model, ask(lora_model, loras=[["one", 1]]), loras=files))
    two = pixels(generate(lora_model, ask(lora_model, loras=[["two", 0.7]]), loras=files))
    both = pixels(generate(lora_model, ask(lora_model, loras=[["one", 1], ["two", 0.7]]), loras=files))
    assert not np.array_equal(both, one) and not np.array_equal(both, two) and not np.array_equal(one, two)
    half = pixels(generate(lora_model, ask(lora_model, loras=[["one", 0.5]]), loras=files))
    assert not np.array_equal(half, one)  # the weight matters
    zero = pixels(generate(lora_model, ask(lora_model, loras=[["one", 0]]), loras=files))
    assert np.array_equal(zero, plain_before)


def test_a_lora_for_another_base_model_is_refused_naming_the_layer(lora_model, layers, plain_before):
    wider = tiny_lora_state_dict(build_tiny_lora_layers(lora_model.pipeline, seed=3, widen=8))
    with pytest.raises(LoraMismatch, match=r"layer unet\.down_blocks\.1\.attentions\.0\.transformer_blocks\.0\."
                                           r"attn1\.to_q does not fit.*2x72") as refused:
        check_lora(lora_model, wider)
    assert refused.value.layer == "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    with pytest.raises(UnsupportedRequest, match=r"^loras: LoRA 'wide' cannot be used with model .*attn1\.to_q "
                                                 r"does not fit") as refused:  # a job: for the person who asked
        generate(lora_model, ask(lora_model, loras=[["wide", 1]]), loras={"wide": wider})
    assert isinstance(refused.value.__cause__, LoraMismatch)

    extra = tiny_lora_state_dict(layers[1])
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # its first block has no attention
    extra[f"{key}.lora_down.weight"], extra[f"{key}.lora_up.weight"] = torch.zeros(2, 32), torch.zeros(32, 2)
    extra[f"{key}.alpha"] = torch.tensor(2.0)
    with pytest.raises(LoraMismatch, match=r"unet\.down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn1\.to_q "
                                           r"of this LoRA is not in the model"):
        check_lora(lora_model, extra)
    assert np.array_equal(pixels(generate(lora_model, ask(lora_model))), plain_before)


def test_a_file_that_is_not_a_safetensors_lora_is_refused(tmp_path):
    pickled = tmp_path / "lora.ckpt"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(1)}, pickled)
    with pytest.raises(LoraFileError, match="safetensors"):
        read_lora(pickled)
    not_lora = save_lora({"weight": torch.zeros(2)}, tmp_path / "w.safetensors")
    with pytest.raises(LoraFileError, match="no LoRA weights"):
        read_lora(not_lora)


def test_the_kohya_export_round_trip_gives_identical_images(lora_model, layers, tmp_path):
    kohya = tiny_lora_state_dict(layers[1], "kohya", alpha=1.0)  # alpha 1 at rank 2: scale 0.5, kept
    exported = to_kohya(kohya)
    assert set(exported) == set(kohya) and all(torch.equal(exported[key], kohya[key].float()) for key in kohya)
    again = save_lora(to_kohya(save_lora(exported, tmp_path / "down.safetensors")), tmp_path / "up.safetensors")
    first = pixels(generate(lora_model, ask(lora_model, loras=[["a", 1]]), loras={"a": kohya}))
    second = pixels(generate(lora_model, ask(lora_model, loras=[["a", 1]]), loras={"a": again}))
    assert np.array_equal(first, second)

    peft = tiny_lora_state_dict(layers[2], "diffusers")
    from_peft = pixels(generate(lora_model, ask(lora_model, loras=[["b", 1]]), loras={"b": peft}))
    via_kohya = pixels(generate(lora_model, ask(lora_model, loras=[["b", 1]]), loras={"b": to_kohya(peft)}))
    assert np.array_equal(from_peft, via_kohya)
    assert all(key.startswith(("lora_unet_", "lora_te_")) for key in to_kohya(peft))


def test_adapters_are_loaded_once_and_the_least_recently_used_is_dropped(tiny_model_dir, layers):
    model = load_pipeline(str(tiny_model_dir), device="cpu", dtype="fp32")
    adapter_state(model).capacity = 2
    files = {str(seed): tiny_lora_state_dict(build_tiny_lora_layers(model.pipeline, seed=seed, rank=1))
             for seed in (4, 5, 6)}
    first = pixels(generate(model, ask(model, loras=[["4", 1]]), loras=files))
    generate(model, ask(model, loras=[["4", 1]]), loras=files)
    assert adapter_state(model).loads == 1  # the second job found it loaded
    generate(model, ask(model, loras=[["5", 1]]), loras=files)
    generate(model, ask(model, loras=[["6", 1]]), loras=files)
    assert loaded_adapters(model) == [lora_hash(files["5"]), lora_hash(files["6"])]
    assert np.array_equal(pixels(generate(model, ask(model, loras=[["4", 1]]), loras=files)), first)


def test_a_plain_job_waits_while_a_lora_job_runs_on_the_same_model(lora_model, layers):
    started, release, plain_entered = threading.Event(), threading.Event(), threading.Event()

    def lora_job():
        with use_loras(lora_model, [("one", tiny_lora_state_dict(layers[1]), 1.0)]):
            started.set()
            release.wait(10)

    def plain_job():
        with use_loras(lora_model, []):
            plain_entered.set()

    threads = [threading.Thread(target=lora_job)]
    threads[0].start()
    assert started.wait(10)
    threads.append(threading.Thread(target=plain_job))
    threads[1].start()
    time.sleep(0.2)
    assert not plain_entered.is_set()  # the adapters are on the shared UNet: the plain job must wait
    release.set()
    assert plain_entered.wait(10)
    for thread in threads:
        thread.join(10)


def test_a_request_naming_a_lora_without_a_file_is_refused_on_the_loras_field(lora_model):
    with pytest.raises(UnsupportedRequest, match="^loras: no LoRA file was given for 'ghost'"):
        generate(lora_model, ask(lora_model, loras=[["ghost", 1]]))


# ------------------------------------------------------------------ the request and its tags

def test_lora_tags_are_taken_out_of_the_prompt_with_their_weights():
    assert parse_lora_tags("a <lora:x:0.5> red <lora:y> circle<lora:z:-2>") == (
        "a red circle", [("x", 0.5), ("y", 1.0), ("z", -2.0)], [])
    assert parse_lora_tags("<lora:my style:1.5>, a cat") == (", a cat", [("my style", 1.5)], [])
    assert parse_lora_tags("no tags (here:1.2)") == ("no tags (here:1.2)", [], [])


def test_odd_lora_tags_are_reported_or_left_alone_as_a1111_reads_them():
    assert parse_lora_tags("a \\<lora:x:1> b")[1] == [("x", 1.0)]  # A1111 has no escape for tags
    assert parse_lora_tags("a<lora:<lora:x:1>b") == ("a<lora:b", [("x", 1.0)], [])
    assert parse_lora_tags("unclosed <lora:x:1")[1:] == ([], [])
    assert parse_lora_tags("<lora:x:lots>")[2] and parse_lora_tags("<lora::1>")[2]
    assert parse_lora_tags("<lora:x:1:0.5>")[2]  # A1111's separate te/unet weights: said, not guessed
    with pytest.raises(RequestValidationError) as refused:
        validate_request({"prompt": "a cat <lora:x:9>"})
    assert set(refused.value.errors) == {"prompt"} and "-4 to 4" in refused.value.errors["prompt"]


def test_lora_tag_parsing_is_linear_in_the_length_of_the_text():
    for text in ("<lora:" * 40_000, "<lora:x" + ":" * 200_000 + ">", ("<lora:a:1>" + "x" * 5) * 20_000):
        started = time.perf_counter()
        parse_lora_tags(text)
        assert time.perf_counter() - started < 1.0


def test_the_loras_field_and_prompt_tags_merge_and_round_trip_through_json():
    request = validate_request({"prompt": "a red <lora:x:0.5> circle", "loras": [{"name": "y", "weight": 0.8},
                                                                                 ["x", 0.25]]})
    assert request.prompt == "a red circle"
    assert request.loras == (("y", 0.8), ("x", 0.75))  # a name given twice: its weights add up
    assert GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    assert validate_request({"prompt": "a", "loras": "x:0.5, y"}).loras == (("x", 0.5), ("y", 1.0))
    assert validate_request({"prompt": "a"}).loras == ()


@pytest.mark.parametrize("value", [5, {"name": "x"}, [[1, 2]], ["a:9"], [{"name": "a", "w": 1}], list("abcdefghi"),
                                   [{"name": "a<b"}], [["x" * 101, 1]], [["a", True]], "a:nan", [["a", "1e999"]]])
def test_a_bad_loras_field_is_a_field_named_error(value):
    with pytest.raises(RequestValidationError) as refused:
        validate_request({"prompt": "a cat", "loras": value})
    assert set(refused.value.errors) == {"loras"}


def test_the_site_can_refuse_unknown_lora_names_on_the_loras_field():
    request = validate_request({"prompt": "a <lora:mine:1> <lora:theirs:1>"})
    check_lora_names(request, {"mine", "theirs"})
    with pytest.raises(RequestValidationError) as refused:
        check_lora_names(request, {"mine"})
    assert refused.value.errors == {"loras": "unknown LoRA: 'theirs' (not found, or not yours to use)"}


# ------------------------------------------------------------------------- PNG parameters

def test_the_png_records_lora_tags_and_hashes_as_a1111_and_gives_them_back(lora_model, layers):
    files = {"one": tiny_lora_state_dict(layers[1]), "two": tiny_lora_state_dict(layers[2])}
    request = ask(lora_model, prompt="a red circle <lora:one:0.8>", loras=[["two", -0.5]])
    result = generate(lora_model, request, loras=files)
    infotext = result.parameters[0]
    assert infotext.splitlines()[0] == "a red circle <lora:two:-0.5> <lora:one:0.8>"
    assert (f'Lora hashes: "two: {lora_hash(files["two"])[:12]}, one: {lora_hash(files["one"])[:12]}"'
            in infotext)
    fields, extra = parse_parameters(infotext)
    assert parse_lora_hashes(extra["Lora hashes"]) == {"two": lora_hash(files["two"])[:12],
                                                       "one": lora_hash(files["one"])[:12]}
    again = validate_request({**fields, "num_images": 1}, lora_model.limits)
    assert (again.prompt, again.loras) == (request.prompt, request.loras)  # an A1111 PNG (infotext only)

    png = io.BytesIO()
    write_png(result.images[0], result.metadata[0], infotext, png)
    read = read_png_metadata(png.getvalue())
    restored = validate_request(read["fields"], lora_model.limits)
    assert (restored.prompt, restored.loras) == (request.prompt, request.loras)  # ours (the JSON chunk)
    assert result.metadata[0]["lora_files"][0] == {"name": "two", "weight": -0.5, "hash": lora_hash(files["two"])}


def test_any_json_in_the_loras_field_is_a_request_or_a_field_named_error():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=10)
                               | st.dictionaries(st.sampled_from(["name", "weight", "x"]) | st.text(max_size=5), inner,
                                                 max_size=4), max_leaves=30)

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(json_values, st.text(max_size=60).map(lambda text: f"a <lora:{text}"))
    def check(value, prompt):
        try:
            request = validate_request({"prompt": prompt, "loras": value})
        except RequestValidationError as error:
            assert set(error.errors) <= {"loras", "prompt"}
        else:
            assert GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request

    check()


def test_an_upload_is_checked_against_the_model_directory_without_loading_its_weights(tiny_model_dir, layers,
                                                                                       lora_model):
    from generation.diffusion.lora import model_skeleton

    skeleton = model_skeleton(tiny_model_dir)
    assert skeleton.unet.device.type == "meta"
    assert check_lora(skeleton, tiny_lora_state_dict(layers[1], "diffusers")).format == "diffusers"
    wider = tiny_lora_state_dict(build_tiny_lora_layers(lora_model.pipeline, seed=3, widen=8), "kohya")
    with pytest.raises(LoraMismatch, match=r"attn1\.to_q does not fit"):
        check_lora(skeleton, wider)


def test_jobs_asking_for_the_same_loras_run_together_on_one_model(lora_model, layers):
    lora = tiny_lora_state_dict(layers[2])
    for wanted in ([], [("two", lora, 0.5)]):
        with use_loras(lora_model, wanted):
            entered = threading.Event()

            def same_job():
                with use_loras(lora_model, wanted):
                    entered.set()

            thread = threading.Thread(target=same_job)
            thread.start()
            assert entered.wait(10)  # it did not wait for the first to finish
            thread.join(10)
