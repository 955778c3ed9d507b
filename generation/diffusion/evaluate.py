"""Judge images of the shapes dataset algorithmically, and score models with it.

``judge`` reads the five attributes back from pixels: background from the
border, object colour from the pixels that are not background, shape from how
much of its bounding box the object fills (square ~1.0, disc ~pi/4, triangle
~1/2; a plus sign, the shape only a LoRA teaches, fills ~5/9 like a triangle
but leaves all four corners of its box empty and its cross solid), size from
the box, position from the box centre. It is what the
quality bar of the built-in model is measured with, so it is first proven on
the dataset's own images (``tests/generation/diffusion/test_evaluate.py``).

The model-level helpers (``generate_and_score``, ``clip_zero_shot``,
``clip_scores``) import torch lazily so the judge itself stays numpy-only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from generation.diffusion.dataset import (
    ATTRIBUTES,
    ATTRIBUTE_VALUES,
    COLORS,
    POSITIONS,
    ShapeSpec,
    caption,
    sample_spec,
    shape_mask,
)

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[n] for n in _PALETTE_NAMES], dtype=np.float32)

# Fill ratio of the bounding box: square 1.0, circle pi/4 = 0.785, triangle 0.5.
SQUARE_MIN_FILL = 0.90
CIRCLE_MIN_FILL = 0.64
LARGE_MIN_SIDE = 23  # small boxes are 12-18 px, large 28-32 px
# A plus sign (only when the fill says triangle): its four corner blocks (PLUS_CORNER
# of the box's side each way) on average at most PLUS_MAX_CORNER filled, and the
# centre and the four arm ends (PLUS_ARM of the side wide) each at least PLUS_MIN_ARM.
# The dataset's plus leaves its corners empty; a triangle's are ~40% filled on
# average (its bottom two ~85%), a disc's ~40%, a square's 100%.
PLUS_CORNER = 0.3
PLUS_ARM = 0.2
PLUS_MAX_CORNER = 0.15
PLUS_MIN_ARM = 0.6


def nearest_palette_index(pixels: np.ndarray) -> np.ndarray:
    """Index into the palette of the nearest colour for each ...x3 pixel."""
    flat = pixels.reshape(-1, 3).astype(np.float32)
    d = ((flat[:, None, :] - _PALETTE[None, :, :]) ** 2).sum(-1)
    return d.argmin(1).reshape(pixels.shape[:-1])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    best_label, best_size, current = 0, 0, 0
    ys, xs = np.nonzero(mask)
    for y0, x0 in zip(ys.tolist(), xs.tolist()):
        if labels[y0, x0]:
            continue
        current += 1
        labels[y0, x0] = current
        queue = deque([(y0, x0)])
        size = 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    queue.append((ny, nx))
        if size > best_size:
            best_label, best_size = current, size
    return labels == best_label if best_size else np.zeros_like(mask)


def _looks_like_plus(box: np.ndarray) -> bool:
    """Whether a boolean object mask cropped to its bounding box is a plus sign: empty corners,
    solid centre and arm ends."""
    h, w = box.shape
    ch, cw = max(1, int(h * PLUS_CORNER)), max(1, int(w * PLUS_CORNER))
    corners = (box[:ch, :cw], box[:ch, w - cw :], box[h - ch :, :cw], box[h - ch :, w - cw :])
    if sum(c.mean() for c in corners) / 4 > PLUS_MAX_CORNER:
        return False
    ah, aw = max(1, round(h * PLUS_ARM)), max(1, round(w * PLUS_ARM))
    y0, x0 = (h - ah) // 2, (w - aw) // 2
    arms = (box[y0 : y0 + ah, x0 : x0 + aw],  # centre
            box[:ch, x0 : x0 + aw], box[h - ch :, x0 : x0 + aw],  # top, bottom
            box[y0 : y0 + ah, :cw], box[y0 : y0 + ah, w - cw :])  # left, right
    return min(a.mean() for a in arms) >= PLUS_MIN_ARM


def judge(image: np.ndarray) -> dict[str, str | None]:
    """The attributes seen in one uint8 HxWx3 image (None where nothing is found)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    h, w, _ = image.shape
    labels = nearest_palette_index(image)
    border = np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]])
    background = int(np.bincount(border, minlength=len(_PALETTE_NAMES)).argmax())
    foreground = labels != background
    result: dict[str, str | None] = {
        "background": _PALETTE_NAMES[background],
        "color": None,
        "shape": None,
        "size": None,
        "position": None,
    }
    if foreground.sum() < 4:
        return result
    # Anti-aliased or blurry edges blend the two colours into a third palette
    # entry, so the object colour is the most common non-background label and
    # the object is that label's largest connected piece.
    color = int(np.bincount(labels[foreground], minlength=len(_PALETTE_NAMES)).argmax())
    result["color"] = _PALETTE_NAMES[color]
    obj = _largest_component(labels == color)
    ys, xs = np.nonzero(obj)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    box_h, box_w = bottom - top + 1, right - left + 1
    fill = obj.sum() / float(box_h * box_w)
    if fill >= SQUARE_MIN_FILL:
        result["shape"] = "square"
    elif fill >= CIRCLE_MIN_FILL:
        result["shape"] = "circle"
    elif _looks_like_plus(obj[top : bottom + 1, left : right + 1]):
        result["shape"] = "plus"
    else:
        result["shape"] = "triangle"
    side = max(box_h, box_w) * 64.0 / max(h, w)
    result["size"] = "large" if side >= LARGE_MIN_SIDE else "small"
    cx = (left + right + 1) / 2.0 * 64.0 / w
    cy = (top + bottom + 1) / 2.0 * 64.0 / h
    result["position"] = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    return result


def score(images: Iterable[np.ndarray], expected: Sequence[dict[str, str]]) -> dict[str, float]:
    """Per-attribute accuracy and ``all`` (every attribute asked for right) of ``images`` against ``expected``.

    An attribute's accuracy counts only the prompts that name it, so partial
    prompts (``a red circle``) are judged on what they ask for; an attribute
    no prompt names is left out.
    """
    hits = {a: 0 for a in ATTRIBUTES}
    named = {a: 0 for a in ATTRIBUTES}
    all_right = 0
    n = 0
    for image, want in zip(images, expected):
        got = judge(image)
        ok = True
        for a in ATTRIBUTES:
            if a in want:
                right = got[a] == want[a]
                hits[a] += right
                named[a] += 1
                ok &= right
        all_right += ok
        n += 1
    if n == 0:
        raise ValueError("nothing to score")
    out = {a: hits[a] / named[a] for a in ATTRIBUTES if named[a]}
    out["all"] = all_right / n
    out["count"] = n
    return out


QUALITY_BAR = {"color": 0.95, "background": 0.95, "shape": 0.90, "size": 0.90, "position": 0.90, "all": 0.75}


def format_table(result: dict[str, float], bar: dict[str, float] | None = QUALITY_BAR, all_label: str = "all five right") -> str:
    """A markdown table of a ``score`` result, against the quality bar (``bar=None``: accuracies only)."""
    lines = ["| attribute | accuracy | bar | met |", "| --- | --- | --- | --- |"] if bar else ["| attribute | accuracy |", "| --- | --- |"]
    for a in (*ATTRIBUTES, "all"):
        if a not in result:
            continue
        label = all_label if a == "all" else ("object colour" if a == "color" else a)
        row = f"| {label} | {result[a]:.1%} |"
        if bar:
            target = bar.get(a)
            row += " | |" if target is None else f" ≥ {target:.0%} | {'yes' if result[a] >= target else '**no**'} |"
        lines.append(row)
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Model-level evaluation (torch imported lazily)


def pipeline_images(
    pipe,
    attribute_sets: Sequence[dict[str, str]],
    seed: int = 0,
    steps: int = 25,
    guidance_scale: float = 7.5,
    batch_size: int = 25,
    generate: Callable | None = None,
) -> list[np.ndarray]:
    """Images for fully specified prompts from a diffusers text-to-image pipeline.

    Prompt ``i`` uses the generator seed ``seed + i`` so any image can be
    reproduced alone. ``generate`` may replace the stock pipeline call
    (``generate(prompts, seeds) -> list[uint8 array]``), e.g. the engine's.
    """
    import torch

    prompts = [caption(a) for a in attribute_sets]
    out: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seeds = list(range(seed + start, seed + start + len(chunk)))
        if generate is not None:
            out.extend(np.asarray(im) for im in generate(chunk, seeds))
            continue
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        result = pipe(
            chunk,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            output_type="np",
        )
        out.extend(as_uint8(result.images))
    return out


def as_uint8(images) -> list[np.ndarray]:
    """A diffusers pipeline's ``output_type="np"`` images (floats in 0..1) as uint8 HxWx3 arrays."""
    return [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]


def clip_zero_shot(clip_model, tokenizer, images: np.ndarray, expected: Sequence[dict[str, str]], batch_size: int = 128) -> dict[str, float]:
    """Per-attribute accuracy of a CLIP model as a zero-shot classifier.

    Each image is scored against every full caption; an attribute's predicted
    value is the one whose captions carry the most probability mass
    (log-sum-exp of the logits over the captions with that value).
    """
    import torch

    from generation.diffusion.dataset import all_full_attribute_sets

    combos = all_full_attribute_sets()
    texts = [caption(a) for a in combos]
    device = next(clip_model.parameters()).device
    with torch.no_grad():
        text_features = []
        for i in range(0, len(texts), 256):
            tok = tokenizer(texts[i : i + 256], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
            text_features.append(_as_tensor(clip_model.get_text_features(input_ids=tok.input_ids.to(device))))
        text_features = torch.nn.functional.normalize(torch.cat(text_features), dim=-1)
        pixel_values = torch.from_numpy(clip_pixel_values(images, clip_model.config.vision_config.image_size))
        image_features = []
        for i in range(0, len(pixel_values), batch_size):
            image_features.append(_as_tensor(clip_model.get_image_features(pixel_values=pixel_values[i : i + batch_size].to(device))))
        image_features = torch.nn.functional.normalize(torch.cat(image_features), dim=-1)
        logits = image_features @ text_features.T * clip_model.logit_scale.exp()
    hits = {a: 0 for a in ATTRIBUTES}
    for a in ATTRIBUTES:
        values = ATTRIBUTE_VALUES[a]
        index = torch.tensor([values.index(c[a]) for c in combos])
        per_value = torch.full((len(images), len(values)), float("-inf"))
        for v in range(len(values)):
            per_value[:, v] = torch.logsumexp(logits[:, index == v], dim=1)
        predicted = per_value.argmax(1).tolist()
        hits[a] = sum(values[p] == e[a] for p, e in zip(predicted, expected)) / len(expected)
    return hits


def _as_tensor(features):
    # transformers 5 may return a model output instead of a bare tensor.
    if hasattr(features, "pooler_output"):
        return features.pooler_output
    return features


# CLIP's own normalisation constants; the built-in CLIP is trained with them
# (and ships them in its preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixel_values(images: np.ndarray, image_size: int = 64) -> np.ndarray:
    """uint8 NHWC images -> normalised float32 NCHW at ``image_size`` (bilinear resize if needed)."""
    x = np.asarray(images).astype(np.float32) / 255.0
    if x.shape[1] != image_size or x.shape[2] != image_size:
        import torch

        t = torch.from_numpy(x.transpose(0, 3, 1, 2))
        t = torch.nn.functional.interpolate(t, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        x = t.numpy().transpose(0, 2, 3, 1)
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return x.transpose(0, 3, 1, 2).copy()


def clip_scores(clip_model, tokenizer, images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
    """CLIP score per (image, prompt) pair: 100 x cosine similarity, floored at 0 (Hessel et al., 2021)."""
    import torch

    device = next(clip_model.parameters()).device
    with torch.no_grad():
        tok = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        t = torch.nn.functional.normalize(_as_tensor(clip_model.get_text_features(input_ids=tok.input_ids.to(device))), dim=-1)
        pv = torch.from_numpy(clip_pixel_values(images, clip_model.config.vision_config.image_size)).to(device)
        i = torch.nn.functional.normalize(_as_tensor(clip_model.get_image_features(pixel_values=pv)), dim=-1)
        return (100.0 * (t * i).sum(-1)).clamp(min=0).cpu().numpy()


# --------------------------------------------------------------------------
# Image to image: change one attribute of a dataset image, judge what changed and what was kept
# (benchmarks/eval_image_to_image.py; the model card's image-to-image table)

EDITABLE_ATTRIBUTES = ("color", "background")


@dataclass(frozen=True)
class EditCase:
    """A dataset image (``render(spec)``) and a prompt that names it with one attribute changed:
    the object colour (img2img) or the background (inpainting the background)."""

    spec: ShapeSpec
    attribute: str  # one of EDITABLE_ATTRIBUTES
    new_value: str

    @property
    def source(self) -> dict[str, str]:
        """The source image's attributes (its own caption's)."""
        return self.spec.attributes()

    @property
    def target(self) -> dict[str, str]:
        """The attributes the edited prompt names: the source's with ``attribute`` changed."""
        return {**self.spec.attributes(), self.attribute: self.new_value}

    def object_mask(self) -> np.ndarray:
        """Boolean HxW mask of the source image's shape (the renderer's own)."""
        return shape_mask(self.spec.shape, self.spec.side, self.spec.cx, self.spec.cy)


def edit_cases(count: int, seed: int, attribute: str) -> list[EditCase]:
    """``count`` dataset specs, each with a new value for ``attribute`` drawn uniformly from the
    colours that are neither the object's nor the background's (so the edited prompt is a valid
    caption and the change is visible); deterministic in ``seed``."""
    if attribute not in EDITABLE_ATTRIBUTES:
        raise ValueError(f"attribute must be one of {EDITABLE_ATTRIBUTES}, not {attribute!r}")
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        spec = sample_spec(rng)
        others = [c for c in COLORS if c not in (spec.color, spec.background)]
        cases.append(EditCase(spec, attribute, others[int(rng.integers(len(others)))]))
    return cases


def object_mask(image: np.ndarray) -> np.ndarray:
    """Boolean HxW mask of the object ``judge`` sees: the largest 4-connected piece of the most
    common non-background palette colour (all False when ``judge`` finds no object)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    labels = nearest_palette_index(image)
    border = np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]])
    background = int(np.bincount(border, minlength=len(_PALETTE_NAMES)).argmax())
    foreground = labels != background
    if foreground.sum() < 4:
        return np.zeros(labels.shape, bool)
    color = int(np.bincount(labels[foreground], minlength=len(_PALETTE_NAMES)).argmax())
    return _largest_component(labels == color)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate ``hits / n`` (95% for z = 1.96)."""
    if n <= 0:
        raise ValueError("no trials")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


# An object overlapping its source's shape this much is the same object in the same place (a
# txt2img image with the same caption rarely is: its jitter and side differ).
SAME_PLACE_IOU = 0.7


def score_edits(images: Iterable[np.ndarray], cases: Sequence[EditCase]) -> dict:
    """How edited images answer their :class:`EditCase`: per image, ``changed`` (the attribute
    is judged as the new value), ``unchanged`` (still judged as the source's value), ``kept_<a>``
    for each other attribute (judged as the source's), ``kept_all`` (all four), ``edited``
    (changed and all four kept), ``same_place`` (object mask IoU with the source's shape >=
    ``SAME_PLACE_IOU``). Returns ``{"count": n, "rates": {name: [rate, low, high]}, "mean_iou":
    x}`` with Wilson 95% intervals."""
    counts: dict[str, int] = {}
    ious = []
    n = 0
    for image, case in zip(images, cases):
        got = judge(image)
        source = case.source
        hits = {"changed": got[case.attribute] == case.new_value,
                "unchanged": got[case.attribute] == source[case.attribute]}
        kept = [a for a in ATTRIBUTES if a != case.attribute]
        for a in kept:
            hits[f"kept_{a}"] = got[a] == source[a]
        hits["kept_all"] = all(hits[f"kept_{a}"] for a in kept)
        hits["edited"] = hits["changed"] and hits["kept_all"]
        iou = mask_iou(object_mask(image), case.object_mask())
        ious.append(iou)
        hits["same_place"] = iou >= SAME_PLACE_IOU
        for name, hit in hits.items():
            counts[name] = counts.get(name, 0) + bool(hit)
        n += 1
    if n == 0:
        raise ValueError("nothing to score")
    return {"count": n, "rates": {name: [hits / n, *wilson_interval(hits, n)] for name, hits in counts.items()},
            "mean_iou": float(np.mean(ious))}


def _attribute_label(attribute: str) -> str:
    return "object colour" if attribute == "color" else attribute


def format_edit_table(rows: Sequence[tuple[str, dict]], attribute: str) -> str:
    """A markdown table of ``score_edits`` results, one row per (label, result), rates with their
    95% intervals."""
    kept = [a for a in ATTRIBUTES if a != attribute]
    columns = [("changed", f"{_attribute_label(attribute)} is the new one"),
               *((f"kept_{a}", f"{_attribute_label(a)} kept") for a in kept),
               ("edited", "changed and all four kept"),
               ("same_place", f"same object in place (IoU ≥ {SAME_PLACE_IOU:g})")]
    lines = ["| run | N | " + " | ".join(title for _, title in columns) + " | mean IoU |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " | --- |"]
    for label, result in rows:
        cells = []
        for name, _ in columns:
            rate, low, high = result["rates"][name]
            cells.append(f"{rate:.1%} ({low:.0%}–{high:.0%})")
        lines.append(f"| {label} | {result['count']} | " + " | ".join(cells) + f" | {result['mean_iou']:.2f} |")
    return "\n".join(lines)
