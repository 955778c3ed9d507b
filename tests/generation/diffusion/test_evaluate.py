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
