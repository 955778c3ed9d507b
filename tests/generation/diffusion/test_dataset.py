import hashlib
import json

import numpy as np
import pytest

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


# --------------------------------------------------------------------------
# The plus sign: a shape the built-in model never saw, drawn only when asked for


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# Computed with the dataset as it was before the plus sign existed (the data the built-in model
# was trained on): 200 default draws per seed, the generator's next integer after them, their
# pixels, and the training captions drawn next from the same generator.
BEFORE_THE_PLUS = {
    0: ("7960d1a65de2b127", "7d4d59992b92984c", "63bae552f436e5e6"),
    7: ("f348b87350e65f6e", "ec6ace134a0d7038", "09bf7101c79b3fbe"),
    2024: ("a7316801279cdc8c", "b7bd4578855a4f4b", "f2bf327fede55203"),
}


@pytest.mark.parametrize("seed", sorted(BEFORE_THE_PLUS))
def test_training_draws_images_and_captions_are_exactly_what_they_were_before_the_plus(seed):
    rng = np.random.default_rng(seed)
    specs = [d.sample_spec(rng) for _ in range(200)]
    tail = int(rng.integers(2**62))
    images = np.stack([d.render(s) for s in specs])
    captions = d.training_captions(specs, rng)
    got = (_digest(json.dumps([s.as_dict() for s in specs]).encode() + str(tail).encode()),
           _digest(images.tobytes()), _digest("\n".join(captions).encode()))
    assert got == BEFORE_THE_PLUS[seed]
    assert "plus" not in {s.shape for s in specs}


def test_the_vocabulary_and_evaluation_prompts_are_what_they_were_before_the_plus():
    def h(obj):
        return _digest(json.dumps(obj).encode())

    assert h(d.vocabulary_corpus()) == "c40c62020688c496"
    assert h(d.evaluation_prompts(200, 0)) == "cd0f4f3acdc2d5c6"
    assert h(d.partial_evaluation_prompts(200, 0)) == "4cb9fd1315264c9f"
    assert h(d.all_full_attribute_sets()) == "66c7d35613173d13"


def test_a_plus_appears_only_when_asked_for():
    _, default = d.generate(1000, seed=21)
    assert {s.shape for s in default} == set(d.SHAPES)
    _, asked = d.generate(50, seed=21, attributes={"shape": "plus"})
    assert {s.shape for s in asked} == {"plus"}
    _, every = d.generate(400, seed=21, shapes=d.ALL_SHAPES)
    assert {s.shape for s in every} == {"circle", "square", "triangle", "plus"}
    assert {p["shape"] for p in d.evaluation_prompts(100, 0, shapes=("plus",))} == {"plus"}


def test_asking_for_an_unknown_shape_is_an_error():
    with pytest.raises(ValueError, match="star"):
        d.sample_spec(np.random.default_rng(0), {"shape": "star"})
    with pytest.raises(ValueError, match="star"):
        d.generate(3, seed=0, shapes=("circle", "star"))


def test_plus_images_are_a_symmetric_cross_of_the_captioned_size_and_place_with_empty_corners():
    images, specs = d.generate(300, seed=22, attributes={"shape": "plus"})
    assert {s.size for s in specs} == {"small", "large"} and len({s.position for s in specs}) == 5
    for image, spec in zip(images, specs):
        colours = {tuple(c) for c in image.reshape(-1, 3).tolist()}
        assert colours == {d.COLORS[spec.color], d.COLORS[spec.background]}
        mask = np.all(image == d.COLORS[spec.color], axis=-1)
        ys, xs = np.nonzero(mask)
        box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert box.shape == (spec.side, spec.side)
        lo, hi = d.SIZES[spec.size]
        assert lo <= spec.side <= hi
        cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
        px, py = d.POSITIONS[spec.position]
        assert abs(cx - px) <= d.POSITION_JITTER + 0.5 and abs(cy - py) <= d.POSITION_JITTER + 0.5
        # The same under every flip and a quarter turn: a cross, not a T or an L.
        assert np.array_equal(box, box[::-1]) and np.array_equal(box, box[:, ::-1]) and np.array_equal(box, box.T)
        arm = d.plus_arm_width(spec.side)
        assert abs(arm - spec.side / 3) <= 1
        assert box[0].sum() == arm and box[spec.side // 2].sum() == spec.side  # top arm end, full middle row
        corner = (spec.side - arm) // 2
        assert corner >= 4 and not box[:corner, :corner].any()
        assert abs(box.mean() - 5 / 9) < 0.08
        assert d.parse_caption(d.caption(spec.attributes())) == spec.attributes()


def test_plus_captions_use_the_same_grammar_as_the_other_shapes():
    attrs = {"size": "large", "color": "red", "shape": "plus", "position": "in the center", "background": "white"}
    assert d.caption(attrs) == "a large red plus in the center on a white background"
    assert d.parse_caption("a large red plus in the center on a white background") == attrs
    assert d.parse_caption("a red plus") == {"color": "red", "shape": "plus"}


def test_a_captioned_folder_of_pluses_is_what_training_reads(tmp_path):
    from PIL import Image

    from generation.diffusion.training.data import read_folder

    paths = d.write_captioned_folder(tmp_path / "plus", 12, seed=3, attributes={"shape": "plus"}, prefix="plsgn, ")
    assert [p.name for p in paths] == [f"plus_{i:03d}.png" for i in range(12)]
    images, specs = d.generate(12, seed=3, attributes={"shape": "plus"})
    pairs = read_folder(tmp_path / "plus")
    assert [p for p, _ in pairs] == paths
    for (path, text), image, spec in zip(pairs, images, specs):
        assert text == "plsgn, " + d.caption(spec.attributes())
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)


def test_a_contact_sheet_lays_images_out_in_rows_with_gaps():
    images, _ = d.generate(13, seed=4)
    sheet = d.contact_sheet(images, cols=5, gap=2, scale=2)
    assert sheet.shape == (3 * 130 + 2, 5 * 130 + 2, 3)
    assert np.array_equal(sheet[2:130, 2:130], images[0].repeat(2, 0).repeat(2, 1))
    assert np.array_equal(sheet[2 + 2 * 130 : 2 * 130 + 130, 2 + 2 * 130 : 2 * 130 + 130], images[12].repeat(2, 0).repeat(2, 1))
