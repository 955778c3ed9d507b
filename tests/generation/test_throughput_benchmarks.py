"""The throughput benchmarks (bench_gpu.py, bench_lora.py) keep running: each in its tiny
configuration, on the CPU, printing every row they print on a GPU or on the built-in model."""

import importlib.util
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_times_diffusers_the_engine_the_fast_path_and_concurrent_jobs_in_one_run(capsys):
    bench = _script("bench_gpu")
    result = bench.main(["--device", "cpu", "--preset", "tiny", "--threads", "1", "--repeats", "1",
                                        "--concurrency", "1,2", "--compile-backend", "eager"])
    assert all(result[row]["its"] > 0 and result[row]["job_s"] > 0 for row in ("plain_diffusers", "engine", "fast_path"))
    assert result["fast_path_report"]["compiled_shapes"] == ["2x4x16x16 float32"]  # one 32 px image with CFG
    assert [row["jobs"] for row in result["concurrent"]] == [1, 2]
    assert all(row["one_at_a_time"] > 0 for row in result["concurrent"])
    printed = capsys.readouterr().out
    assert "| engine + fast path |" in printed and "preset tiny on cpu" in printed
    if bench.batch_api() is not None:
        assert all(row["batched"] > 0 for row in result["concurrent"])
    else:
        assert "| 2 | " in printed and "n/a (no batch API)" in printed


def test_the_lora_benchmark_prices_one_and_three_loras_against_none_and_the_swap(capsys):
    result = _script("bench_lora").main(["--preset", "tiny", "--repeats", "1"])
    rows = {row["set"]: row for row in result["rows"]}
    assert list(rows) == ["no LoRA", "1 LoRA", "3 LoRAs"]
    assert rows["no LoRA"]["ratio_wall"] == pytest.approx(1.0)
    assert all(row["job_s"] > 0 and row["first_job_s"] > 0 for row in rows.values())
    assert "| 3 LoRAs |" in capsys.readouterr().out


def test_the_batching_benchmark_still_loads_with_the_generate_pages_client():
    # Two real servers are too slow for the suite, but the script must not rot with bench_jobs:
    # it once imported a function bench_jobs no longer had, and failed before measuring anything.
    from benchmarks.bench_jobs import Page

    bench = _script("bench_batching")
    assert bench.Page is Page
    assert inspect.iscoroutinefunction(bench.Site.job)
