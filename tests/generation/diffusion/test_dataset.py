import numpy as np

from generation.diffusion import dataset as d


def test_same_seed_gives_the_same_images_and_specs():
    a_images, a_specs = d.generate(50, seed=7)
    b_images, b_specs = d.generate(50, seed=7)
    assert np.array_equal(a_images, b_images)
    assert a_specs == b_specs


def test_different_seeds_give_different_images():
    a, _ = d.generate(20, seed=1)
    b, _ = d.generate(20, seed=2)
    assert not np.array_equal(a, b)


def test_images_use_only_the_exact_palette_and_two_colours_each():
    images, specs = d.generate(100, seed=3)
    assert images.shape == (100, 64, 64, 3) and images.dtype == np.uint8
    for image, spec in zip(images, specs):
        colours = {tuple(c) for c in image.reshape(-1, 3).tolist()}
        assert colours == {d.COLORS[spec.color], d.COLORS[spec.background]}
        assert spec.color != spec.background


def test_captions_match_pixels():
    images, specs = d.generate(200, seed=4)
    for image, spec in zip(images, specs):
        mask = np.all(image == d.COLORS[spec.color], axis=-1)
        ys, xs = np.nonzero(mask)
        side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        lo, hi = d.SIZES[spec.size]
        assert lo <= side <= hi
        cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
        px, py = d.POSITIONS[spec.position]
        assert abs(cx - px) <= d.POSITION_JITTER + 0.5 and abs(cy - py) <= d.POSITION_JITTER + 0.5
        fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
        expected_fill = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}[spec.shape]
        assert abs(fill - expected_fill) < 0.1
        if spec.shape == "triangle":  # upright: the apex row is narrower than the base row
            assert mask[ys.min()].sum() < mask[ys.max()].sum()
        text = d.caption(spec.attributes())
        assert d.parse_caption(text) == spec.attributes()


def test_caption_reads_like_the_issue_example():
    attrs = {"size": "large", "color": "yellow", "shape": "circle", "position": "in the center", "background": "blue"}
    assert d.caption(attrs) == "a large yellow circle in the center on a blue background"


def test_training_captions_include_full_partial_and_empty():
    rng = np.random.default_rng(0)
    _, specs = d.generate(300, seed=5)
    captions = d.training_captions(specs, rng, p_full=0.5, p_empty=0.1)
    full = sum(c == d.caption(s.attributes()) for c, s in zip(captions, specs))
    empty = sum(c == "" for c in captions)
    partial = len(captions) - full - empty
    assert full > 100 and 10 < empty < 60 and partial > 50
    for c, s in zip(captions, specs):
        if c:
            parsed = d.parse_caption(c)
            assert parsed["shape"] == s.shape
            assert all(s.attributes()[k] == v for k, v in parsed.items())


def test_evaluation_prompts_are_fully_specified_distinct_and_deterministic():
    prompts = d.evaluation_prompts(200, seed=0)
    assert prompts == d.evaluation_prompts(200, seed=0)
    assert len({d.caption(p) for p in prompts}) == 200
    assert all(set(p) == set(d.ATTRIBUTES) and p["color"] != p["background"] for p in prompts)


def test_partial_evaluation_prompts_keep_the_shape_and_drop_about_half_of_the_other_attributes():
    full = d.evaluation_prompts(200, seed=0)
    partial = d.partial_evaluation_prompts(200, seed=0)
    assert partial == d.partial_evaluation_prompts(200, seed=0)
    for whole, cut in zip(full, partial):
        assert cut["shape"] == whole["shape"]
        assert all(whole[name] == value for name, value in cut.items())
    kept = sum(len(p) - 1 for p in partial) / (4 * len(partial))
    assert 0.4 < kept < 0.6, kept
    assert any(len(p) == 1 for p in partial) and any(len(p) == 5 for p in partial)
    assert d.parse_caption(d.caption(partial[0])) == partial[0]
