"""The resident model cache: one load per model, LRU eviction under a memory budget, thread safety."""

import threading
import time
from types import SimpleNamespace

import pytest

from generation.diffusion import ModelCache, generate, load_pipeline


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_loader(sizes, delay=0.0, calls=None):
    def load(source, **kwargs):
        if calls is not None:
            calls.append(source)
        time.sleep(delay)
        if source not in sizes:
            raise OSError(f"no model {source}")
        return SimpleNamespace(source=source, nbytes=sizes[source], kwargs=kwargs)

    return load


def test_a_second_job_on_the_same_model_performs_no_load(tiny_model_dir, make_request):
    cache = ModelCache(max_bytes=2**30, loader=load_pipeline)
    first = cache.get(str(tiny_model_dir), dtype="fp32")
    generate(first, make_request(steps=1))
    second = cache.get(str(tiny_model_dir), dtype="fp32")
    generate(second, make_request(steps=1))
    assert cache.load_count == 1
    assert second is first
    assert str(tiny_model_dir) in cache and len(cache) == 1
    assert cache.total_bytes == first.nbytes


def test_least_recently_used_models_are_evicted_over_the_budget():
    cache = ModelCache(max_bytes=250, loader=fake_loader({"a": 100, "b": 100, "c": 100}))
    cache.get("a")
    cache.get("b")
    cache.get("a")  # a is now more recent than b
    cache.get("c")  # 300 > 250: evict the least recently used, b
    assert cache.sources() == ["a", "c"]
    assert cache.evictions == 1 and cache.total_bytes == 200
    cache.get("b")
    assert cache.sources() == ["c", "b"] and cache.load_count == 4


def test_a_model_larger_than_the_budget_still_loads_alone():
    cache = ModelCache(max_bytes=50, loader=fake_loader({"small": 10, "huge": 500}))
    cache.get("small")
    assert cache.get("huge").nbytes == 500
    assert cache.sources() == ["huge"]


def test_different_load_options_are_different_entries():
    cache = ModelCache(max_bytes=10**6, loader=fake_loader({"a": 1}))
    assert cache.get("a", dtype="fp32") is not cache.get("a", dtype="bf16")
    assert cache.get("a", dtype="fp32").kwargs == {"dtype": "fp32"}
    assert cache.load_count == 2


def test_a_model_is_held_only_with_the_options_it_was_loaded_with():
    cache = ModelCache(max_bytes=10**6, loader=fake_loader({"a": 1}))
    assert not cache.holds("a", dtype="fp32")
    cache.get("a", dtype="fp32")
    assert cache.holds("a", dtype="fp32")
    assert not cache.holds("a", dtype="bf16"), "another precision would load: the job shows its loading state"


def test_threads_asking_for_the_same_model_at_once_cause_one_load():
    calls = []
    cache = ModelCache(max_bytes=10**6, loader=fake_loader({"a": 1, "b": 1}, delay=0.2, calls=calls))
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(cache.get(s))) for s in ["a"] * 4 + ["b"] * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(calls) == ["a", "b"]
    assert len({id(r) for r in results if r.source == "a"}) == 1


def test_a_failed_load_is_not_cached_and_is_retried():
    cache = ModelCache(max_bytes=10**6, loader=fake_loader({}))
    for _ in range(2):
        with pytest.raises(OSError):
            cache.get("missing")
    assert len(cache) == 0 and cache.load_count == 0


def test_evict_and_clear_drop_resident_models():
    cache = ModelCache(max_bytes=10**6, loader=fake_loader({"a": 1, "b": 1}))
    cache.get("a")
    cache.get("b")
    cache.evict("a")
    assert cache.sources() == ["b"]
    cache.clear()
    assert len(cache) == 0
