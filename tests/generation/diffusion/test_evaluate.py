import hashlib
import json
from collections import Counter

import numpy as np

from generation.diffusion import dataset as d
from generation.diffusion import evaluate as e


def test_evaluator_scores_every_attribute_right_on_dataset_images():
    images, specs = d.generate(400, seed=11)
    result = e.score(images, [s.attributes() for s in specs])
    for attribute in (*d.ATTRIBUTES, "all"):
        assert result[attribute] >= 0.995, (attribute, result)


def test_evaluator_tolerates_blurred_edges_and_noise():
    images, specs = d.generate(150, seed=12)
    x = images.astype(np.float32)
    # 3x3 box blur plus noise: what a decoder's soft edges look like.
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, dy : dy + 64, dx : dx + 64] for dy in range(3) for dx in range(3)) / 9
    noisy = blurred + np.random.default_rng(0).normal(0, 6, blurred.shape)
    result = e.score(np.clip(noisy, 0, 255).astype(np.uint8), [s.attributes() for s in specs])
    assert result["all"] >= 0.95, result


def test_judge_reports_no_object_on_a_blank_image():
    blank = np.zeros((64, 64, 3), np.uint8) + np.array(d.COLORS["blue"], np.uint8)
    got = e.judge(blank)
    assert got["background"] == "blue" and got["color"] is None


def test_score_counts_all_five_only_when_every_attribute_is_right():
    images, specs = d.generate(2, seed=13)
    wrong = dict(specs[1].attributes())
    wrong["shape"] = next(s for s in d.SHAPES if s != wrong["shape"])
    result = e.score(images, [specs[0].attributes(), wrong])
    assert result["shape"] == 0.5 and result["all"] == 0.5 and result["color"] == 1.0


def test_format_table_marks_attributes_below_the_bar():
    table = e.format_table({"color": 1.0, "background": 0.5, "shape": 1, "size": 1, "position": 1, "all": 0.5})
    assert "| background | 50.0% | ≥ 95% | **no** |" in table
    assert "| object colour | 100.0% | ≥ 95% | yes |" in table


def test_score_judges_partial_prompts_only_on_the_attributes_they_name():
    images, specs = d.generate(4, seed=14)
    asked = [s.attributes() for s in specs]
    wrong_colour = next(c for c in d.COLORS if c not in (asked[0]["color"], asked[0]["background"]))
    prompts = [
        {"shape": asked[0]["shape"], "color": wrong_colour},  # colour wrong
        {"shape": asked[1]["shape"], "color": asked[1]["color"]},
        {"shape": asked[2]["shape"]},
        {"shape": asked[3]["shape"], "position": asked[3]["position"]},
    ]
    result = e.score(images, prompts)
    assert result["color"] == 0.5  # one of the two prompts naming a colour
    assert result["shape"] == 1.0 and result["position"] == 1.0
    assert "size" not in result and "background" not in result  # no prompt asked for them
    assert result["all"] == 0.75
    assert "| all named right |" in e.format_table(result, bar=None, all_label="all named right")


# --------------------------------------------------------------------------
# The plus sign (the shape only a LoRA teaches the built-in model)


def _blurred(images: np.ndarray, noise: float = 6.0) -> np.ndarray:
    """3x3 box blur plus Gaussian noise (as in the test above): a decoder's soft edges."""
    x = images.astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, dy : dy + 64, dx : dx + 64] for dy in range(3) for dx in range(3)) / 9
    return np.clip(blurred + np.random.default_rng(0).normal(0, noise, blurred.shape), 0, 255).astype(np.uint8)


def test_judge_reads_rendered_plus_signs_back_with_every_attribute():
    images, specs = d.generate(300, seed=31, attributes={"shape": "plus"})
    result = e.score(images, [s.attributes() for s in specs])
    assert result["shape"] >= 0.98, result
    assert result["all"] >= 0.98, result


def test_judge_still_reads_most_plus_signs_with_blurred_edges():
    images, specs = d.generate(300, seed=32, attributes={"shape": "plus"})
    result = e.score(_blurred(images), [s.attributes() for s in specs])
    assert result["shape"] >= 0.95, result


def test_judge_never_calls_an_image_of_a_training_shape_a_plus():
    images, specs = d.generate(400, seed=33)
    assert {s.shape for s in specs} == set(d.SHAPES)
    for batch in (images, _blurred(images)):
        judged = Counter(e.judge(image)["shape"] for image in batch)
        assert judged["plus"] == 0, judged


def test_judge_judges_the_training_shapes_exactly_as_it_did_before_the_plus():
    # Hashes of judge()'s answers on 300 dataset images, sharp and blurred, computed with the
    # evaluator as it was before it knew the plus sign.
    images, _ = d.generate(300, seed=99)
    for batch, before in ((images, "623ce0a4bc0355ee"), (_blurred(images), "0c94fb61b69088ba")):
        answers = json.dumps([e.judge(image) for image in batch]).encode()
        assert hashlib.sha256(answers).hexdigest()[:16] == before


def test_a_plus_with_a_filled_corner_is_not_a_plus():
    spec = d.sample_spec(np.random.default_rng(5), {"shape": "plus", "size": "large"})
    image = d.render(spec)
    assert e.judge(image)["shape"] == "plus"
    half, arm = spec.side / 2, d.plus_arm_width(spec.side)
    top, left = int(spec.cy - half), int(spec.cx - half)
    corner = (spec.side - arm) // 2
    image[top + spec.side - corner : top + spec.side, left : left + corner] = d.COLORS[spec.color]  # an L-ish blob
    assert e.judge(image)["shape"] != "plus"
