"""The engine's metadata is strict JSON by construction: whatever a scheduler's config holds
(non-finite floats, numpy scalars and arrays, tuples), what the engine returns is accepted by
``json.dumps(..., allow_nan=False)`` and by SQLite's JSON_VALID check, which refused every job of
DPM++ 2M and its variants (diffusers' ``lambda_min_clipped = -inf``) before."""

import json
import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import generation
from generation.diffusion import SAMPLERS, ModelLimits, validate_request
from generation.diffusion.engine import _Clock, _Job, describe, json_safe

# Hypothesis keeps its caches in ./.hypothesis unless told otherwise: not in the work tree.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "ldmsite-hypothesis"))

BUILTIN_SCHEDULER_CONFIG = Path(generation.__file__).parent / "builtin_model" / "scheduler" / "scheduler_config.json"

# A model as describe() reads it, without weights: no CLIP, so no scores to compute.
STUB_MODEL = SimpleNamespace(clip=None, name="stub", short_hash="0123456789",
                             describe=lambda: {"name": "stub", "hash": "0" * 64},
                             precision=SimpleNamespace(to_dict=lambda: {"device": "cpu", "dtype": "float32"}))
REQUEST = validate_request({"prompt": "a red circle", "seed": 3, "num_images": 2}, ModelLimits())


def engine_metadata(scheduler, interrupted=None) -> list[dict]:
    """What the engine returns as metadata for a run with ``scheduler`` (its ``config`` is what
    goes into the metadata), through the engine's own ``describe``."""
    now = time.perf_counter()
    job = _Job(scheduler=scheduler, pipe=None, generators=[], guidance=None, preview=None,
               observer=SimpleNamespace(guidance_seconds=0.0, bookkeeping_seconds=0.0),
               clock=_Clock(started=now, call_started=now, finished=now), interrupted=interrupted)
    return describe(STUB_MODEL, REQUEST, job, images=[]).metadata


def assert_strict_json(metadata) -> None:
    text = json.dumps(metadata, allow_nan=False)  # raises ValueError on NaN or ±Infinity
    assert json.loads(text) == metadata, "a JSON round trip changes nothing"
    # What Django's JSONField writes (plain json.dumps), through SQLite's own check.
    with sqlite3.connect(":memory:") as database:
        assert database.execute("SELECT json_valid(?)", (json.dumps(metadata),)).fetchone() == (1,)


def assert_same_meaning(original, stored) -> None:
    """``stored`` says what ``original`` said: numbers equal, a non-finite float as the string
    ``float()`` reads back, sequences as lists, numpy values as their Python values."""
    if isinstance(original, (np.ndarray, np.generic)):
        original = original.tolist()
    if isinstance(original, float) and not math.isfinite(original):
        assert isinstance(stored, str), stored
        assert math.isnan(float(stored)) if math.isnan(original) else float(stored) == original
    elif isinstance(original, (list, tuple)):
        assert isinstance(stored, list) and len(stored) == len(original)
        for item, stored_item in zip(original, stored):
            assert_same_meaning(item, stored_item)
    elif isinstance(original, dict):
        assert isinstance(stored, dict) and set(stored) == set(original)
        for key, item in original.items():
            assert_same_meaning(item, stored[key])
    else:
        assert stored == original and type(stored) is type(original), (original, stored)


any_float = st.floats(allow_nan=True, allow_infinity=True)
numpy_scalars = st.one_of(any_float.map(np.float64), st.floats(width=32).map(np.float32),
                          st.integers(-2**63, 2**63 - 1).map(np.int64), st.booleans().map(np.bool_))
numpy_arrays = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]),
                          hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
leaves = st.one_of(st.none(), st.booleans(), st.integers(), any_float, st.text(max_size=6), numpy_scalars,
                   numpy_arrays)
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=12)
scheduler_configs = st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=scheduler_configs)
def test_any_scheduler_config_reaches_the_metadata_as_strict_json_that_means_the_same(config):
    metadata = engine_metadata(SimpleNamespace(config=config))
    assert_strict_json(metadata)
    for record in metadata:
        assert_same_meaning(config, record["scheduler"]["config"])


@settings(max_examples=150, deadline=None)
@given(value=values)
def test_json_safe_makes_any_value_strict_json(value):
    safe = json_safe(value)
    json.dumps(safe, allow_nan=False)
    assert_same_meaning(value, safe)
    assert json_safe(safe) == safe, "already safe: unchanged"


def test_non_finite_floats_become_the_strings_float_reads_back_and_keys_become_strings():
    assert json_safe({"a": -math.inf, "b": (math.inf, np.float32("nan")), 1: None, None: np.arange(2)}) == {
        "a": "-inf", "b": ["inf", "nan"], "1": None, "null": [0, 1]}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_offered_samplers_scheduler_config_is_strict_json_in_the_metadata(sampler, tiny_model_dir):
    for config_file in (BUILTIN_SCHEDULER_CONFIG, tiny_model_dir / "scheduler" / "scheduler_config.json"):
        scheduler = SAMPLERS[sampler].build(json.loads(config_file.read_text()))
        metadata = engine_metadata(scheduler)
        assert_strict_json(metadata)
        recorded = metadata[0]["scheduler"]
        assert recorded["class"] == type(scheduler).__name__
        if recorded["class"] == "DPMSolverMultistepScheduler":
            assert recorded["config"]["lambda_min_clipped"] == "-inf", "diffusers' -inf, kept as a string"


def test_an_interrupted_runs_metadata_is_strict_json_and_says_where_it_stopped():
    from diffusers import DPMSolverMultistepScheduler

    metadata = engine_metadata(DPMSolverMultistepScheduler(), interrupted=(3, 20))
    assert_strict_json(metadata)
    assert [(m["interrupted"], m["interrupted_at_step"], m["total_steps"]) for m in metadata] == [(True, 3, 20)] * 2
