"""Hypothesis strategies for hostile input: arbitrary JSON with huge numbers, Unicode digits and
number spellings Python reads but no client means, deep nesting, and arbitrary form data."""

from __future__ import annotations

import json

from hypothesis import strategies as st

HUGE_NUMBERS = [10 ** 400, -(10 ** 400), 2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 25, 10 ** 19, 1e308, -1e308, 5e-324,
                0, -1, 1, 2 ** 31]
HOSTILE_TEXT = ["²", "①", "¹²", "８", "١٢٨", "𝟳", "Ⅻ", "1_000", "0x10", "0b1", "1e400", "-1e400", "nan", "NaN",
                "inf", "-Infinity", "10^25", "9" * 25, "9" * 400, "1" + "0" * 25, " 7 ", "7\u00a0", "", " ", "\x00",
                "-0", "+1", "1.5", "1e3", ".", "-", "e", "true", "null", "[]", "{}", "\ud7ff", "a" * 3000,
                "x\n" + "a" * 2000, '"' * 100, "\\" * 100, "%s%n", "../../etc/passwd", "<script>", "' OR 1=1 --"]

numbers = st.sampled_from(HUGE_NUMBERS) | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
texts = st.sampled_from(HOSTILE_TEXT) | st.text(max_size=30)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(texts, children, max_size=3), max_leaves=8)


def json_objects(fields) -> st.SearchStrategy[dict]:
    """Objects whose keys are mostly the endpoint's own fields, with hostile values."""
    keys = st.sampled_from(list(fields)) | texts if fields else texts
    return st.dictionaries(keys, json_values, max_size=len(fields) + 2)


def deep(depth: int, kind: str = "list") -> bytes:
    return (b"[" * depth + b"]" * depth) if kind == "list" else (b'{"a": ' * depth + b"1" + b"}" * depth)


RAW_BODIES = [b"[" * 100_000, b'{"a": ' * 50_000, deep(990), deep(990, "object"), deep(40), deep(40, "object"),
              b"", b"{", b"\xff\xfe", b"NaN", b"Infinity", b"1e400", b'"' + b"\\" * 1001 + b'"',
              b"9" * 5000, b"[" + b"9" * 4301 + b"]", b"\x00", "{\"prompt\": \"\ud800\"}".encode("utf-8", "surrogatepass")]


def bodies(fields) -> st.SearchStrategy[bytes]:
    """A request body: mostly a JSON object of the endpoint's fields, sometimes any JSON or raw bytes."""
    encode = lambda value: json.dumps(value).encode()  # noqa: E731
    return st.one_of(json_objects(fields).map(encode), json_values.map(encode), st.sampled_from(RAW_BODIES),
                     st.binary(max_size=40))


# One hostile value of each kind, for the sweep of every field (a sample of the above: each field
# gets each of these once, whatever the random examples happen to draw).
SWEEP_VALUES = [10 ** 400, -(10 ** 400), 2 ** 64, 1e308, "²", "①", "١٢٨", "9" * 400, "1e400", "nan", "", None, [],
                {}, [[[["x"]]]], True, "a" * 3000]
SWEEP_TEXT = ["²", "①", "١٢٨", "9" * 400, "1" + "0" * 25, "10^25", "1e400", "nan", "-1", "", "\x00", "a" * 3000]
form_text = st.sampled_from(HOSTILE_TEXT) | st.text(max_size=30) | st.integers().map(str)


def keys_of(fields) -> st.SearchStrategy[str]:
    return st.sampled_from(list(fields)) | st.text(max_size=8) if fields else st.text(max_size=8)


def query_params(fields) -> st.SearchStrategy[dict]:
    return st.dictionaries(keys_of(fields), form_text, max_size=len(fields) + 1)


def form_data(fields) -> st.SearchStrategy[dict]:
    """What a browser (or anyone) may post: each field one or several arbitrary strings."""
    return st.dictionaries(keys_of(fields), st.lists(form_text, min_size=1, max_size=3), max_size=len(fields) + 1)
