"""A1111's prompt attention syntax: the parser against A1111's own examples, chunking, weighted
embeddings, and the engine in every mode (plain prompts stay plain diffusers, bit for bit)."""

import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generation.diffusion import SourceImages, generate, parse_prompt_attention, plain_text, validate_request
from generation.diffusion.prompts import (BREAK, Fragment, emphasize, prompt_arguments, tokenize_chunks,
                                          weighted_embeddings)

from .tiny import TINY_IMAGE_SIZE, with_engine_kernels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pairs(fragments):
    return [[fragment.text, fragment.weight] for fragment in fragments]


def pixels(image):
    return np.asarray(image, dtype=np.int16)


# ---- the parser ----

# modules/prompt_parser.py, parse_prompt_attention's docstring (AUTOMATIC1111/stable-diffusion-webui)
A1111_EXAMPLES = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]),
]


@pytest.mark.parametrize("text, expected", A1111_EXAMPLES)
def test_the_parser_gives_a1111s_documented_answers(text, expected):
    parsed = pairs(parse_prompt_attention(text))
    assert [fragment for fragment, _ in parsed] == [fragment for fragment, _ in expected]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in expected], rel=1e-12)


@pytest.mark.parametrize("text, expected", [
    ("(word)", [["word", 1.1]]),
    ("((word))", [["word", 1.21]]),
    ("[word]", [["word", 1 / 1.1]]),
    ("(word:1.3)", [["word", 1.3]]),
    ("(word:0.5) and [[more]]", [["word", 0.5], [" and ", 1.0], ["more", 1 / 1.21]]),
    ("(word:-1)", [["word", -1.0]]),
])
def test_round_brackets_raise_square_brackets_lower_and_a_number_sets_the_weight(text, expected):
    assert pairs(parse_prompt_attention(text)) == [[t, pytest.approx(w, rel=1e-12)] for t, w in expected]


def test_escaped_brackets_and_backslashes_are_literal_text():
    assert pairs(parse_prompt_attention(r"\(a\) \[b\] c\\d")) == [["(a) [b] c\\d", 1.0]]
    assert pairs(parse_prompt_attention(r"(\(a\))")) == [["(a)", pytest.approx(1.1)]]


def test_a_closing_bracket_without_its_opener_is_text_and_an_open_one_weighs_to_the_end():
    assert pairs(parse_prompt_attention("smile :) ]")) == [["smile :) ]", 1.0]]
    assert pairs(parse_prompt_attention("a [b")) == [["a ", 1.0], ["b", pytest.approx(1 / 1.1)]]
    assert pairs(parse_prompt_attention("a :1.5) b")) == [["a :1.5) b", 1.0]]


def test_break_is_a_chunk_boundary_only_as_an_upper_case_word_of_its_own():
    assert parse_prompt_attention("a red circle BREAK a blue square") == [
        Fragment("a red circle", 1.0), BREAK, Fragment("a blue square", 1.0)]
    assert pairs(parse_prompt_attention("BREAKFAST break")) == [["BREAKFAST break", 1.0]]
    weighted = parse_prompt_attention("(a BREAK b)")
    assert weighted[1] is BREAK and weighted[0].weight == weighted[2].weight == pytest.approx(1.1)


def test_the_plain_words_of_a_prompt_drop_the_syntax():
    assert plain_text("a (red:1.4) [[circle]] BREAK on \\(white\\)") == "a red circle on (white)"
    assert plain_text("a red circle") == "a red circle"


@pytest.mark.parametrize("text", [
    "(" * 50_000 + "word" + ")" * 50_000,
    "(a" * 50_000,
    "[a(b:1.2)" * 11_000,
    " " * 99_990 + "BREAK",
    ":" + "1" * 99_999,
    "\\(" * 50_000,
])
def test_the_parser_reads_a_100k_character_prompt_in_well_under_a_second(text):
    started = time.perf_counter()
    fragments = parse_prompt_attention(text)
    assert time.perf_counter() - started < 1.0  # measured: ~0.1 s; A1111's quadratic loop takes minutes on some
    assert fragments and all(abs(fragment.weight) <= 1000 for fragment in fragments)


# ---- chunks and embeddings ----


def test_a_150_token_prompt_makes_two_77_token_chunks_and_break_starts_a_new_one(engine_model):
    tokenizer = engine_model.pipeline.tokenizer
    chunks = tokenize_chunks(tokenizer, parse_prompt_attention("red " * 150))
    red = tokenizer("red", add_special_tokens=False)["input_ids"][0]
    assert [len(chunk) for chunk in chunks.tokens] == [77, 77]
    assert chunks.tokens[0][1:76] == [red] * 75 and chunks.tokens[1][1:76] == [red] * 75
    assert chunks.tokens[0][0] == tokenizer.bos_token_id and chunks.tokens[0][76] == tokenizer.eos_token_id

    broken = tokenize_chunks(tokenizer, parse_prompt_attention("(red:1.5) BREAK circle"))
    assert len(broken.tokens) == 2
    assert broken.tokens[0][1] == red and broken.weights[0][1] == 1.5
    assert broken.tokens[0][2] == tokenizer.eos_token_id and broken.weights[1][1] == 1.0


def test_a_full_chunk_moves_the_words_after_a_recent_comma_to_the_next_chunk(engine_model):
    tokenizer = engine_model.pipeline.tokenizer
    chunks = tokenize_chunks(tokenizer, parse_prompt_attention("red " * 70 + ", " + "blue " * 10))
    comma = tokenizer.get_vocab()[",</w>"]
    assert chunks.tokens[0][71] == comma and chunks.tokens[0][72] == tokenizer.eos_token_id
    assert chunks.tokens[1][1:11] == tokenizer("blue " * 10, add_special_tokens=False)["input_ids"]


def test_emphasis_scales_each_token_and_restores_the_chunks_mean():
    hidden = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    out = emphasize(hidden, [1.0, 2.0, 1.0, 1.0])
    assert torch.allclose(out.mean(), hidden.mean(), atol=1e-6)
    ratio = (out / hidden)
    assert torch.allclose(ratio[:, 1], 2 * ratio[:, 0], rtol=1e-5)
    assert emphasize(hidden, [1.0] * 4) is hidden


def test_embeddings_with_all_weights_one_are_the_pipelines_own_prompt_encoding(engine_model):
    pipe = engine_model.pipeline
    ours = weighted_embeddings(pipe, "a red circle", "blurry")
    theirs, negative = pipe.encode_prompt("a red circle", "cpu", 1, True, "blurry")
    assert ours["prompt_embeds"].shape == theirs.shape == (1, 77, 32)
    assert torch.allclose(ours["prompt_embeds"], theirs, atol=1e-6)
    assert torch.allclose(ours["negative_prompt_embeds"], negative, atol=1e-6)


def test_a_weight_of_one_encodes_exactly_as_the_plain_word_on_the_embeddings_path(engine_model):
    pipe = engine_model.pipeline
    weighted = weighted_embeddings(pipe, "a (red:1.0) circle BREAK white", None)["prompt_embeds"]
    plain = weighted_embeddings(pipe, "a red circle BREAK white", None)["prompt_embeds"]
    assert torch.equal(weighted, plain)
    assert not torch.equal(weighted_embeddings(pipe, "a (red:1.1) circle BREAK white", None)["prompt_embeds"], plain)


def test_the_negative_prompt_is_padded_to_the_prompts_number_of_chunks(engine_model):
    arguments = weighted_embeddings(engine_model.pipeline, "red " * 100, None)
    assert arguments["prompt_embeds"].shape == arguments["negative_prompt_embeds"].shape == (1, 154, 32)
    arguments = weighted_embeddings(engine_model.pipeline, "(red)", "blurry BREAK dark")
    assert arguments["prompt_embeds"].shape == arguments["negative_prompt_embeds"].shape == (1, 154, 32)


def test_a_pipeline_without_a_text_encoder_gets_the_text_as_it_is():
    class TextOnly:
        def __call__(self, prompt=None, negative_prompt=None):
            pass

    arguments, record = prompt_arguments(TextOnly(), "(red:1.5) circle", None)
    assert arguments == {"prompt": "(red:1.5) circle", "negative_prompt": None}
    assert record["weighted"] is False and "cannot" in record["reason"]


# ---- the engine ----


def test_a_weight_of_one_is_the_plain_word_bit_for_bit(engine_model, make_request):
    plain = generate(engine_model, make_request(prompt="a red circle on white background"))
    weighted = generate(engine_model, make_request(prompt="a (red:1.0) circle on white background"))
    assert np.array_equal(pixels(plain.images[0]), pixels(weighted.images[0]))
    assert plain.metadata[0]["prompt_weighting"] == weighted.metadata[0]["prompt_weighting"] == {"weighted": False}


def test_escaped_brackets_reach_diffusers_as_plain_brackets(tiny_model_dir, engine_model, make_request):
    import diffusers

    request = make_request(prompt="a red circle \\(on white\\)")
    result = generate(engine_model, request)
    pipe = with_engine_kernels(diffusers.StableDiffusionPipeline.from_pretrained(
        tiny_model_dir, safety_checker=None, requires_safety_checker=False))
    recorded = result.metadata[0]["scheduler"]
    pipe.scheduler = getattr(diffusers, recorded["class"]).from_config(recorded["config"])
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a red circle (on white)", height=request.height, width=request.width,
                    num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                    generator=[torch.Generator("cpu").manual_seed(request.seed)]).images[0]
    assert np.array_equal(pixels(result.images[0]), pixels(expected))


def test_a_weight_changes_the_image_and_the_metadata_says_weighted_embeddings_were_used(engine_model, make_request):
    plain = generate(engine_model, make_request(prompt="a red circle on white background", num_images=2))
    stronger = generate(engine_model, make_request(prompt="a (red:1.5) circle on white background", num_images=2))
    for before, after in zip(plain.images, stronger.images):
        assert not np.array_equal(pixels(before), pixels(after))
    alone = generate(engine_model, make_request(prompt="a (red:1.5) circle on white background", seed=8))
    assert np.array_equal(pixels(alone.images[0]), pixels(stronger.images[1]))  # image k is still seed + k's
    assert stronger.metadata[0]["prompt_weighting"] == {"weighted": True, "emphasis": "Original", "chunks": 1}
    assert stronger.metadata[0]["prompt"] == "a (red:1.5) circle on white background"


def test_a_150_token_prompt_is_not_truncated_its_second_chunk_changes_the_image(engine_model, make_request):
    first_75 = " ".join(["a", "red", "circle", "on", "white"] * 15)  # one token per word
    long = first_75 + " " + " ".join(["a", "blue", "square", "on", "black"] * 15)
    tokenizer = engine_model.pipeline.tokenizer
    assert len(tokenizer(first_75, add_special_tokens=False)["input_ids"]) == 75
    assert len(tokenizer(long, add_special_tokens=False)["input_ids"]) == 150
    short = generate(engine_model, make_request(prompt=first_75))
    full = generate(engine_model, make_request(prompt=long))
    assert short.metadata[0]["prompt_weighting"] == {"weighted": False}
    assert full.metadata[0]["prompt_weighting"]["chunks"] == 2
    assert not np.array_equal(pixels(short.images[0]), pixels(full.images[0]))


def test_a_weighted_negative_prompt_changes_the_image(engine_model, make_request):
    plain = generate(engine_model, make_request(negative_prompt="blue square"))
    weighted = generate(engine_model, make_request(negative_prompt="(blue square:1.6)"))
    assert weighted.metadata[0]["prompt_weighting"]["weighted"] is True
    assert not np.array_equal(pixels(plain.images[0]), pixels(weighted.images[0]))


def _picture():
    image = Image.new("RGB", (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), (200, 30, 30))
    ImageDraw.Draw(image).ellipse((8, 8, 24, 24), fill=(20, 20, 220))
    return image


def _mask():
    mask = Image.new("L", (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 15, 31), fill=255)
    return mask


@pytest.mark.parametrize("fields, source", [
    ({"mode": "img2img", "denoising_strength": 0.7}, lambda: SourceImages(_picture())),
    ({"mode": "inpaint", "denoising_strength": 0.8}, lambda: SourceImages(_picture(), _mask())),
    ({"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "hr_denoising_strength": 0.5}, lambda: None),
    ({"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "hr_prompt": "a [blue] circle BREAK white"},
     lambda: None),
])
def test_weights_work_in_every_mode(engine_model, make_request, fields, source):
    plain = generate(engine_model, make_request(prompt="a red circle", **fields), source=source())
    weighted = generate(engine_model, make_request(prompt="a (red:1.6) circle", **fields), source=source())
    assert weighted.metadata[0]["prompt_weighting"]["weighted"] is True
    assert not np.array_equal(pixels(plain.images[0]), pixels(weighted.images[0]))
    if "hr_prompt" in fields:
        assert weighted.metadata[0]["hires"]["prompt_weighting"]["chunks"] == 2
    elif fields.get("enable_hr"):
        assert weighted.metadata[0]["hires"]["prompt_weighting"]["weighted"] is True


def test_clip_guidance_and_clip_scores_read_the_plain_words(engine_model, make_request):
    from generation.diffusion import clip_scores

    result = generate(engine_model, make_request(prompt="a (red:1.4) [circle]", clip_guidance_scale=200, steps=3))
    assert result.metadata[0]["clip_guided_steps"]
    assert result.clip_scores == clip_scores(engine_model.clip, result.images, "a red circle")


def test_sdxl_gets_both_encoders_and_pooled_embeddings_weighted(tmp_path):
    from generation.diffusion import load_pipeline

    from .tiny import build_tiny_sdxl_pipeline

    model = load_pipeline(str(build_tiny_sdxl_pipeline(tmp_path)), dtype="fp32")
    pipe = model.pipeline
    ours = weighted_embeddings(pipe, "a green square", None)
    theirs = pipe.encode_prompt("a green square", device="cpu", do_classifier_free_guidance=True)
    for mine, expected in zip((ours["prompt_embeds"], ours["negative_prompt_embeds"], ours["pooled_prompt_embeds"],
                               ours["negative_pooled_prompt_embeds"]), theirs):
        assert mine.shape == expected.shape and torch.allclose(mine, expected, atol=1e-6)

    def run(prompt):
        request = validate_request({"prompt": prompt, "width": 32, "height": 32, "steps": 2, "sampler": "Euler",
                                    "seed": 3}, model.limits)
        return generate(model, request)

    plain, weighted = run("a green square"), run("a (green:1.6) square BREAK black")
    assert weighted.metadata[0]["prompt_weighting"] == {"weighted": True, "emphasis": "Original", "chunks": 2}
    assert not np.array_equal(pixels(plain.images[0]), pixels(weighted.images[0]))
