"""The procedural captioned-shapes dataset the built-in model is trained on.

One filled shape on a solid background, 64x64 RGB, with a caption that names
every attribute: ``a {size} {color} {shape} {position} on a {background}
background``. Everything is a pure function of a seed, so a training run can
regenerate any batch from ``(seed, step)`` and a resumed run sees exactly the
data it would have seen without the interruption.

Besides the three training shapes there is a plus sign (``EXTRA_SHAPES``),
drawn only when asked for (``sample_spec(rng, {"shape": "plus"})`` or
``shapes=ALL_SHAPES``): the built-in model never saw one, so it is what a LoRA
is taught. The default draws (what training sees) are exactly as before.

Pure numpy (Pillow only to write a folder); no torch, no Django.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

IMAGE_SIZE = 64

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 210, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# The shapes the built-in model was trained on: what every default draw picks from.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Shapes drawn only when asked for (a new concept for the built-in model): a
# plus sign whose arms are about a third of its side thick.
EXTRA_SHAPES: tuple[str, ...] = ("plus",)
ALL_SHAPES: tuple[str, ...] = SHAPES + EXTRA_SHAPES
# Bounding-box side in pixels, inclusive ranges.
SIZES: dict[str, tuple[int, int]] = {"small": (12, 18), "large": (28, 32)}
# Object centre (x, y) before jitter.
POSITIONS: dict[str, tuple[int, int]] = {
    "in the center": (32, 32),
    "on the left": (20, 32),
    "on the right": (44, 32),
    "at the top": (32, 20),
    "at the bottom": (32, 44),
}
POSITION_JITTER = 3

ATTRIBUTES: tuple[str, ...] = ("color", "background", "shape", "size", "position")
# The attribute values, keyed like ``ATTRIBUTES``.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "background": tuple(COLORS),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}


@dataclass(frozen=True)
class ShapeSpec:
    """Everything needed to draw one image (the attributes plus the jitter)."""

    color: str
    background: str
    shape: str
    size: str
    position: str
    side: int
    cx: float
    cy: float

    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def as_dict(self) -> dict:
        return asdict(self)


def caption(attributes: dict[str, str | None]) -> str:
    """The caption for the given attributes; a missing or None attribute is left out.

    The shape is the noun and is always present when anything is: partial
    captions look like ``a red circle`` or ``a small square on a white background``.
    An empty dict (or all None) gives the empty caption used for classifier-free
    guidance.
    """
    present = {k: v for k, v in attributes.items() if v}
    if not present:
        return ""
    words = ["a"]
    if present.get("size"):
        words.append(present["size"])
    if present.get("color"):
        words.append(present["color"])
    words.append(present.get("shape") or "shape")
    if present.get("position"):
        words.append(present["position"])
    if present.get("background"):
        words.extend(["on a", present["background"], "background"])
    return " ".join(words)


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a (full or partial) caption names; the inverse of :func:`caption`."""
    text = " ".join(text.lower().split())
    found: dict[str, str] = {}
    background_part = ""
    if " on a " in f" {text} " and text.endswith("background"):
        head, _, background_part = text.rpartition(" on a ")
        text = head
        bg = background_part.removesuffix("background").strip()
        if bg in COLORS:
            found["background"] = bg
    for position in POSITIONS:
        if text.endswith(position):
            found["position"] = position
            text = text[: -len(position)].strip()
            break
    words = text.split()
    for word in words:
        if word in SIZES:
            found["size"] = word
        elif word in COLORS:
            found["color"] = word
        elif word in ALL_SHAPES:
            found["shape"] = word
    return found


def all_full_attribute_sets(shapes: Sequence[str] = SHAPES) -> list[dict[str, str]]:
    """Every fully specified attribute combination (object colour != background) of ``shapes``
    (by default the training shapes)."""
    combos = []
    for color, background, shape, size, position in product(
        COLORS, COLORS, _known_shapes(shapes), SIZES, POSITIONS
    ):
        if color != background:
            combos.append(
                {"color": color, "background": background, "shape": shape, "size": size, "position": position}
            )
    return combos


def vocabulary_corpus() -> list[str]:
    """Text the tokenizer is built from: every full caption plus the empty one's words."""
    return [caption(a) for a in all_full_attribute_sets()]


def _known_shapes(shapes: Sequence[str]) -> tuple[str, ...]:
    shapes = tuple(shapes)
    unknown = [s for s in shapes if s not in ALL_SHAPES]
    if unknown or not shapes:
        raise ValueError(f"shapes must be some of {ALL_SHAPES}, not {shapes!r}")
    return shapes


def sample_spec(
    rng: np.random.Generator, attributes: dict[str, str] | None = None, shapes: Sequence[str] = SHAPES
) -> ShapeSpec:
    """Draw a random spec; any attribute given in ``attributes`` is fixed.

    An unfixed shape is drawn from ``shapes`` (by default the training shapes,
    so the new ones appear only when asked for: ``{"shape": "plus"}`` or
    ``shapes=ALL_SHAPES``).
    """
    attributes = dict(attributes or {})
    if attributes.get("shape") and attributes["shape"] not in ALL_SHAPES:
        raise ValueError(f"unknown shape {attributes['shape']!r}; one of {ALL_SHAPES}")
    color = attributes.get("color") or str(rng.choice(list(COLORS)))
    if attributes.get("background"):
        background = attributes["background"]
    else:
        background = str(rng.choice([c for c in COLORS if c != color]))
    if background == color:
        raise ValueError("object colour must differ from background colour")
    shape = attributes.get("shape") or str(rng.choice(_known_shapes(shapes)))
    size = attributes.get("size") or str(rng.choice(list(SIZES)))
    position = attributes.get("position") or str(rng.choice(list(POSITIONS)))
    lo, hi = SIZES[size]
    side = int(rng.integers(lo, hi + 1))
    jx, jy = rng.integers(-POSITION_JITTER, POSITION_JITTER + 1, size=2)
    return placed_spec(color, background, shape, size, position, side, int(jx), int(jy))


def placed_spec(color: str, background: str, shape: str, size: str, position: str, side: int, jx: int, jy: int) -> ShapeSpec:
    """The spec of a ``side``-px shape at its position's centre moved by (``jx``, ``jy``) px."""
    px, py = POSITIONS[position]
    # A shape with an even side has its centre on a pixel corner, an odd side on
    # a pixel centre; either way the bounding box centre is (cx, cy).
    offset = 0.0 if side % 2 == 0 else 0.5
    return ShapeSpec(color, background, shape, size, position, side, px + jx + offset, py + jy + offset)


_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5


def shape_mask(shape: str, side: int, cx: float, cy: float) -> np.ndarray:
    """Boolean IMAGE_SIZE x IMAGE_SIZE mask of the filled shape whose box is ``side`` px centred at (cx, cy)."""
    half = side / 2.0
    left, top = cx - half, cy - half
    inside_box = (_XX >= left) & (_XX < left + side) & (_YY >= top) & (_YY < top + side)
    if shape == "square":
        return inside_box
    if shape == "circle":
        return ((_XX - cx) ** 2 + (_YY - cy) ** 2 <= half**2) & inside_box
    if shape == "triangle":
        # Upright: apex at the top centre, base along the bottom edge. The
        # half-width grows linearly from 0 at the top to side/2 at the bottom.
        depth = (_YY - top) / side  # 0 at top edge .. 1 at bottom edge (pixel centres)
        return inside_box & (np.abs(_XX - cx) <= half * depth + 0.5)
    if shape == "plus":
        # Two bars crossing at the centre, each spanning the whole box; the
        # thickness has the side's parity so the arms sit symmetric on pixels.
        arm = plus_arm_width(side)
        return inside_box & ((np.abs(_XX - cx) < arm / 2.0) | (np.abs(_YY - cy) < arm / 2.0))
    raise ValueError(f"unknown shape {shape!r}")


def plus_arm_width(side: int) -> int:
    """A plus sign's arm thickness in pixels: the nearest to ``side / 3`` with ``side``'s parity
    (12 px -> 4, 13 -> 5, 16 -> 6, 28 -> 10, 31 -> 11)."""
    third = side / 3.0
    return min((w for w in range(1, side + 1) if w % 2 == side % 2), key=lambda w: (abs(w - third), w))


def render(spec: ShapeSpec) -> np.ndarray:
    """The uint8 HxWx3 image of ``spec``."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    image[:] = COLORS[spec.background]
    image[shape_mask(spec.shape, spec.side, spec.cx, spec.cy)] = COLORS[spec.color]
    return image


def generate(
    count: int, seed: int, attributes: dict[str, str] | None = None, shapes: Sequence[str] = SHAPES
) -> tuple[np.ndarray, list[ShapeSpec]]:
    """``count`` images (uint8, N x 64 x 64 x 3) and their specs, deterministic in ``seed``
    (``attributes`` and ``shapes`` as in :func:`sample_spec`)."""
    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng, attributes, shapes) for _ in range(count)]
    images = np.stack([render(s) for s in specs]) if specs else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return images, specs


def write_captioned_folder(
    folder: str | Path,
    count: int,
    seed: int = 0,
    attributes: dict[str, str] | None = None,
    shapes: Sequence[str] = SHAPES,
    prefix: str = "",
) -> list[Path]:
    """Render ``count`` images into ``folder`` as PNGs with same-named ``.txt`` full captions
    (``plus_000.png`` + ``plus_000.txt``: "a large red plus in the center on a white
    background"), the layout training and album import read. Specs as :func:`generate`
    (``attributes={"shape": "plus"}``: pluses of every colour, background, size and position);
    ``prefix`` is put before each caption (a trigger word: ``"plsgn, "``). Returns the PNG paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, specs = generate(count, seed, attributes, shapes)
    written = []
    for i, (image, spec) in enumerate(zip(images, specs)):
        path = folder / f"{spec.shape}_{i:03d}.png"
        Image.fromarray(image).save(path)
        path.with_suffix(".txt").write_text(prefix + caption(spec.attributes()) + "\n")
        written.append(path)
    return written


def contact_sheet(images: Sequence[np.ndarray] | np.ndarray, cols: int = 10, gap: int = 2, scale: int = 1) -> np.ndarray:
    """The images side by side in rows of ``cols`` (mid-grey ``gap`` px between), each scaled
    up ``scale`` times by pixel repetition: one uint8 image to look at."""
    images = np.asarray(images)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    sheet = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 128, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y : y + h, x : x + w] = image
    return sheet


def training_caption(
    spec: ShapeSpec | dict[str, str],
    rng: np.random.Generator,
    p_full: float = 0.6,
    p_empty: float = 0.1,
    p_keep: float = 0.5,
) -> str:
    """A training caption: full with ``p_full``, empty with ``p_empty``, else partial.

    Partial captions keep the shape and each other attribute independently with
    probability ``p_keep``, so prompts like ``a red circle`` are in distribution.
    """
    attributes = spec.attributes() if isinstance(spec, ShapeSpec) else dict(spec)
    r = rng.random()
    if r < p_empty:
        return ""
    if r < p_empty + p_full:
        return caption(attributes)
    return caption(partial_attributes(attributes, rng, p_keep))


def partial_attributes(attributes: dict[str, str], rng: np.random.Generator, p_keep: float = 0.5) -> dict[str, str]:
    """The shape, plus each other attribute kept independently with probability ``p_keep``."""
    kept = {"shape": attributes["shape"]}
    for name in ("size", "color", "position", "background"):
        if rng.random() < p_keep:
            kept[name] = attributes[name]
    return kept


def training_captions(specs: Sequence[ShapeSpec], rng: np.random.Generator, **kwargs) -> list[str]:
    return [training_caption(s, rng, **kwargs) for s in specs]


def evaluation_prompts(count: int, seed: int, shapes: Sequence[str] = SHAPES) -> list[dict[str, str]]:
    """``count`` fully specified attribute sets of ``shapes`` (by default the training shapes),
    spread over the combinations, deterministic in ``seed``."""
    combos = all_full_attribute_sets(shapes)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(combos))
    return [combos[int(i)] for i in order[:count]]


def partial_evaluation_prompts(
    count: int, seed: int, p_keep: float = 0.5, shapes: Sequence[str] = SHAPES
) -> list[dict[str, str]]:
    """``evaluation_prompts(count, seed, shapes)`` cut down to partial prompts like ``a red circle``.

    Each keeps its shape and each other attribute with probability ``p_keep``
    (the training captions' rule), drawn from a generator seeded ``seed + 1``.
    Only the attributes a prompt names are judged (``evaluate.score``).
    """
    rng = np.random.default_rng(seed + 1)
    return [partial_attributes(attributes, rng, p_keep) for attributes in evaluation_prompts(count, seed, shapes)]


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [-1, 1] (the range the VAE sees)."""
    return (images.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2).copy()


def iter_specs(specs: Iterable[ShapeSpec]) -> list[dict[str, str]]:
    return [s.attributes() for s in specs]
