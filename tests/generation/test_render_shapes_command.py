"""`manage.py render_shapes` writes a folder of captioned plus signs for a LoRA's training album."""

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from generation.diffusion import dataset as d
from generation.diffusion import evaluate as e


def test_render_shapes_writes_captioned_plus_signs_of_varied_looks_and_a_contact_sheet(tmp_path):
    call_command("render_shapes", str(tmp_path / "plus"), "--count", "30", "--sheet", str(tmp_path / "sheet.png"))
    pngs = sorted((tmp_path / "plus").glob("*.png"))
    assert len(pngs) == 30 and all(p.with_suffix(".txt").exists() for p in pngs)
    captions = [d.parse_caption(p.with_suffix(".txt").read_text()) for p in pngs]
    assert {c["shape"] for c in captions} == {"plus"}
    assert all(len(c) == 5 for c in captions), "every caption names all five attributes"
    assert len({c["color"] for c in captions}) >= 5 and len({c["background"] for c in captions}) >= 5
    assert {c["size"] for c in captions} == {"small", "large"} and len({c["position"] for c in captions}) >= 4
    for path, wanted in zip(pngs, captions):
        assert e.judge(np.asarray(Image.open(path).convert("RGB"))) == wanted
    assert Image.open(tmp_path / "sheet.png").size == (10 * 130 + 2, 3 * 130 + 2)


def test_render_shapes_fixes_the_attributes_it_is_given_and_puts_the_prefix_first(tmp_path):
    call_command("render_shapes", str(tmp_path), "--count", "4", "--size", "large", "--color", "red",
                 "--background", "white", "--prefix", "plsgn, ")
    texts = [p.read_text().strip() for p in sorted(tmp_path.glob("*.txt"))]
    assert len(texts) == 4
    assert all(t.startswith("plsgn, a large red plus ") and t.endswith(" on a white background") for t in texts)


def test_render_shapes_refuses_the_same_colour_for_object_and_background(tmp_path):
    with pytest.raises(CommandError, match="differ"):
        call_command("render_shapes", str(tmp_path), "--color", "red", "--background", "red")
