"""Every parser of client text does work linear in its input (issue 24, failure 1).

Python's `re` holds the interpreter lock, so one quadratic match on a long client string froze
HTTP, websockets and the embedded workers for tens of seconds (`_RE_PARAM` in pngmeta: 28.7 s for
a 40,000-character line). Each test here feeds a parser 200,000-character adversarial strings and
checks that the work grows linearly: the time at 200k divided by the time at 20k is at most 20
(a ratio measured in one run, never an absolute time; the best of a few repeats, to keep noise
out). A quadratic parser gives ~100; it is caught at 2k -> 20k first, so a broken parser fails in
seconds instead of running for minutes at 200k.
"""

from __future__ import annotations

import gc
import io
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
from rest_framework.exceptions import ParseError

from gallery import services
from gallery.models import BlocklistEntry, Image
from generation import admission
from generation.blocklist import normalize
from generation.diffusion.pngmeta import (MAX_TEXT_CHARS, PngMetadataError, _find_params, parse_parameters,
                                          read_png_metadata)
from generation.diffusion.request import RequestValidationError, validate_request
from generation.forms import form_ids
from ldmsite.api.parsers import SafeJSONParser
from tests.api.conftest import make_image
from tests.security.conftest import FUZZ

SMALL, LARGE = 20_000, 200_000
MAX_RATIO = 20
RESOLUTION = 5e-4  # below half a millisecond, a time is noise: a bounded parser's ratio is ~1 anyway


def best_time(work, text, repeats: int) -> float:
    """The best of `repeats` runs, with the garbage collector paused: a collection that happens to
    fall into one size's runs (the large input allocates more) is not the parser's work, and on a
    machine busy with other processes the best run is the one closest to the work itself."""
    best = float("inf")
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            work(text)
            best = min(best, time.perf_counter() - start)
    finally:
        if collecting:
            gc.enable()
    return max(best, RESOLUTION)


def assert_linear(work, make, repeats: int = 7) -> None:
    """`work(make(n))` takes at most MAX_RATIO times longer at 200k characters than at 20k."""
    tiny = best_time(work, make(SMALL // 10), repeats)
    small = best_time(work, make(SMALL), repeats)
    assert small / tiny <= MAX_RATIO, f"super-linear already from 2k to 20k: {tiny:.4f} s -> {small:.4f} s"
    large = best_time(work, make(LARGE), repeats)
    assert large / small <= MAX_RATIO, f"super-linear from 20k to 200k: {small:.4f} s -> {large:.4f} s"


def refused(work):
    """`work`, with a refusal counted as its answer (a bounded parser may refuse long input)."""
    def run(text):
        try:
            work(text)
        except (ValueError, OSError, ParseError, admission.Refusal, RequestValidationError):
            pass
    return run


# --- PNG parameters (the infotext) --------------------------------------------------------------------

INFOTEXTS = {
    "one long word (the probe's input)": lambda n: "x\n" + "a" * n,
    "words without colons": lambda n: "x\n" + "a " * (n // 2),
    "keys without values": lambda n: "x\n" + "a-/b " * (n // 5),
    "commas": lambda n: "x\n" + "ab, " * (n // 4),
    "unterminated quote with escapes": lambda n: 'x\nab: "' + "\\a" * (n // 2),
    "quotes that never close a value": lambda n: "x\n" + 'ab: "c' * (n // 6),
    "quoted values not followed by a comma": lambda n: "x\n" + 'ab: "c" d, ' * (n // 11),
    "many pairs": lambda n: "x\n" + "Key: value, " * (n // 12),
    "one long key": lambda n: "x\n" + "a" * n + ": 1, b: 2, c: 3",
    "long numbers": lambda n: "x\nSteps: " + "9" * n + ", Seed: " + "1" * n + ", Size: " + "1" * n + "x1",
    "negative prompt lines": lambda n: "Negative prompt: a\n" * (n // 19),
    "whitespace": lambda n: "x\n" + " \t" * (n // 2) + "a",
}


@pytest.mark.parametrize("shape", INFOTEXTS)
def test_the_infotext_parser_is_linear(shape):
    assert_linear(parse_parameters, INFOTEXTS[shape])


A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')  # A1111's own, quadratic


@FUZZ
@given(st.text(st.sampled_from(list('ab_ -/:,"\\\n\t\u00e9\u00b2\u3000x1')), max_size=40) | st.text(max_size=40))
def test_the_linear_infotext_scanner_finds_exactly_what_a1111s_pattern_finds(line):
    assert _find_params(line) == A1111_PARAM.findall(line)


def png_with_parameters(text: str) -> bytes:
    info = PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_reading_a_png_with_a_long_parameters_text_is_linear():
    pngs = {n: png_with_parameters("x\n" + "a" * n) for n in (SMALL // 10, SMALL, LARGE)}
    assert_linear(refused(read_png_metadata), pngs.__getitem__)
    with pytest.raises(PngMetadataError, match="longer than"):
        read_png_metadata(pngs[LARGE])
    assert read_png_metadata(png_with_parameters("a cat\nSteps: 3, Seed: 1, Size: 8x8"))["fields"]["steps"] == 3
    assert MAX_TEXT_CHARS < LARGE


# --- The request validator ------------------------------------------------------------------------------

VALIDATOR_INPUTS = {
    "digits": lambda n: "9" * n,
    "spaces around a number": lambda n: " " * n + "1" + " " * n,
    "unicode digits": lambda n: "²" * n,
    "a long exponent": lambda n: "1e" + "9" * n,
    "a long fraction": lambda n: "0." + "1" * n,
}
NUMBER_FIELDS = ("width", "height", "steps", "guidance_scale", "autoguidance_scale", "num_images", "eta", "seed",
                 "clip_guidance_scale", "clip_cutouts", "clip_guidance_every", "clip_guidance_start",
                 "clip_guidance_end")


@pytest.mark.parametrize("shape", VALIDATOR_INPUTS)
def test_the_request_validator_is_linear(shape):
    def validate(text):
        validate_request({"prompt": text, "negative_prompt": text, "sampler": text,
                          **{field: text for field in NUMBER_FIELDS}})
    assert_linear(refused(validate), VALIDATOR_INPUTS[shape])


# --- Form id lists ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda n: ["9" * n], lambda n: [" " * n + "1"], lambda n: ["²" * n],
                                  lambda n: ["1"] * (n // 100) + ["x" * n]],
                         ids=["digits", "spaces", "unicode digits", "many ids then a long one"])
def test_form_id_lists_are_linear(make):
    assert_linear(refused(lambda values: form_ids(values, "images")), make)


# --- The API's JSON parser -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda n: b"[" * n, lambda n: b'{"a": ' * (n // 6) + b"1",
                                  lambda n: b"[" * 30 + b"1," * (n // 2) + b"1" + b"]" * 30,
                                  lambda n: b'"' + b"\\u00b2" * (n // 6) + b'"'],
                         ids=["deep lists", "deep objects", "long list within the depth", "escaped text"])
def test_the_api_json_parser_is_linear(make):
    assert_linear(refused(lambda body: SafeJSONParser().parse(io.BytesIO(body))), make)


# --- Search and explore ----------------------------------------------------------------------------------

SEARCHES = {
    "one long word": lambda n: "a" * n,
    "many words": lambda n: "a " * (n // 2),
    "many distinct words": lambda n: " ".join(str(i) for i in range(n // 6)),
    "wildcards": lambda n: "%_" * (n // 2),
}


@pytest.mark.parametrize("shape", SEARCHES)
def test_search_is_linear_and_bounded(db, shape):
    from django.contrib.auth import get_user_model
    owner = get_user_model().objects.create_user("searcher")
    for prompt in ("a" * 1000, "a" * 999 + "b", "a red circle"):
        make_image(owner, prompt=prompt, visibility=Image.Visibility.PUBLIC)
    assert_linear(lambda query: services.explore("newest", query, "", "", 24), SEARCHES[shape])
    assert len(services.search_words(SEARCHES[shape](LARGE))) <= services.MAX_QUERY_WORDS


def test_a_hand_made_cursor_is_read_in_bounded_time(db):
    assert_linear(lambda cursor: services.decode_cursor(cursor, 2), lambda n: "W" * n)


# --- The blocklist ------------------------------------------------------------------------------------------

HOSTILE_PATTERNS = [("forbidden words", "term"), (r"a.*b", "regex"), (r"(a|aa)*c", "regex"), (r"\w+\s*x", "regex")]


@pytest.mark.parametrize("make", [lambda n: "a" * n, lambda n: "a " * (n // 2), lambda n: "forbidden " * (n // 10)],
                         ids=["one letter", "words", "the term itself"])
def test_the_blocklist_matcher_is_bounded_on_long_text(db, make):
    """Entries saved by hand (the save-time probe would refuse the worst of these) against long text:
    the matcher's timeouts bound the work, and the prompt gate refuses long prompts before matching."""
    for pattern, kind in HOSTILE_PATTERNS:
        BlocklistEntry.objects.create(pattern=pattern, kind=kind, check_negative_prompt=True)

    def match(text):
        try:
            admission.find_blocked({"prompt": normalize(text), "negative_prompt": normalize(text)})
        except admission.Refusal:
            pass

    assert_linear(match, make)
    assert_linear(refused(lambda text: admission.check_prompt(None, text, text)), make)
