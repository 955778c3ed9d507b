"""The image-to-image measurements (the model card's table, docs/PERFORMANCE.md's mode costs) keep
running: each script in a tiny configuration on the built-in model, and the edit scoring they use."""

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from generation.diffusion import dataset as shapes
from generation.diffusion import evaluate

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "generation" / "builtin_model"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builtin_model():
    import torch

    from generation.diffusion import load_pipeline

    before = torch.get_num_threads()
    model = load_pipeline(str(MODEL), dtype="fp32")
    yield model
    torch.set_num_threads(before)  # the scripts set one thread


def test_an_image_with_the_asked_colour_and_everything_else_in_place_scores_as_edited():
    cases = evaluate.edit_cases(30, seed=5, attribute="color")
    edited = [shapes.render(dataclasses.replace(c.spec, color=c.new_value)) for c in cases]
    untouched = [shapes.render(c.spec) for c in cases]
    got, baseline = evaluate.score_edits(edited, cases), evaluate.score_edits(untouched, cases)
    assert got["rates"]["edited"][0] == 1.0 and got["rates"]["same_place"][0] == 1.0
    assert baseline["rates"]["changed"][0] == 0.0 and baseline["rates"]["kept_all"][0] == 1.0
    low, high = got["rates"]["edited"][1:]
    assert 0.85 < low < 1.0 == high  # a Wilson interval: 30 of 30 does not prove 100%


def test_a_new_background_is_never_the_objects_colour_nor_the_old_background():
    for case in evaluate.edit_cases(200, seed=6, attribute="background"):
        assert case.new_value not in (case.spec.color, case.spec.background)
        assert case.target["background"] == case.new_value and case.target["shape"] == case.spec.shape


def test_the_image_to_image_evaluation_scores_every_run_and_writes_its_tables(builtin_model, tmp_path):
    results = _script("eval_image_to_image").main(
        ["--cases", "2", "--steps", "4", "--strengths", "0.6", "--inpaint-strengths", "0.75", "--mask-blurs", "4",
         "--out", str(tmp_path)], model=builtin_model)
    assert [label for label, _ in results["img2img"]] == [
        "img2img, new colour, strength 0.6", 'img2img, only "a {new colour} {shape}", strength 0.6',
        "baseline: img2img, the source's own caption, strength 0.6", "baseline: text to image, new colour",
        'baseline: text to image, only "a {new colour} {shape}"']
    assert len(results["inpaint"]) == 3
    assert all(row["count"] == 2 for _, row in results["img2img"] + results["inpaint"])
    tables = (tmp_path / "tables.md").read_text()
    assert "| img2img, new colour, strength 0.6 | 2 |" in tables and "new background" in tables
    assert (tmp_path / "img2img_first20.png").is_file() and (tmp_path / "inpaint_first20.png").is_file()


def test_the_mode_benchmark_times_every_mode_against_text_to_image(builtin_model, capsys):
    rows = _script("bench_modes").main(["--steps", "4", "--repeats", "1"], model=builtin_model)
    by_mode = {row["mode"]: row for row in rows}
    assert by_mode["txt2img"]["ratio_wall"] == 1.0
    assert by_mode["outpaint +16 px each side"]["size"] == "96x96"
    assert by_mode["hires fix x2, Latent"]["size"] == "128x128"
    assert by_mode["img2img, strength 0.75"]["steps_x_pixels"] == pytest.approx(3 / 4)
    assert all(row["wall_s"] > 0 for row in rows)
    assert "| hires fix x2, Latent | 128x128 |" in capsys.readouterr().out
