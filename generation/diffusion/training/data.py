"""Training data: the procedural shapes, or a user's folder of captioned images.

A user folder holds images with same-named ``.txt`` captions
(``cat.png`` + ``cat.txt``), or a ``metadata.jsonl`` with one
``{"file_name": ..., "text": ...}`` object per line (the Hugging Face
imagefolder convention). Every batch is drawn from a step-seeded RNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from generation.diffusion import dataset as shapes

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class ShapesData:
    """Procedural captioned shapes; captions drop attributes and go empty for CFG."""

    procedural = True

    def __init__(self, p_full: float = 0.6, p_empty: float = 0.1):
        self.p_full, self.p_empty = p_full, p_empty

    def batch(self, rng: np.random.Generator, n: int, p_empty: float | None = None):
        specs = [shapes.sample_spec(rng) for _ in range(n)]
        images = np.stack([shapes.render(s) for s in specs])
        pe = self.p_empty if p_empty is None else p_empty
        captions = shapes.training_captions(specs, rng, p_full=self.p_full, p_empty=pe)
        return images, captions

    def caption_corpus(self) -> list[str]:
        return shapes.vocabulary_corpus()


def _load_image(path: Path, resolution: int) -> np.ndarray:
    """RGB, shorter side resized to ``resolution``, centre-cropped square."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = resolution / min(w, h)
        im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
        return np.asarray(im, dtype=np.uint8)


def read_folder(path: str | Path) -> list[tuple[Path, str]]:
    """(image path, caption) pairs of a user folder, sorted by file name."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"training data folder not found: {root}")
    meta = root / "metadata.jsonl"
    pairs: list[tuple[Path, str]] = []
    if meta.exists():
        for line_no, line in enumerate(meta.read_text().splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            name = record.get("file_name") or record.get("image")
            text = record.get("text", record.get("caption"))
            if name is None or text is None:
                raise ValueError(f"{meta}:{line_no}: needs 'file_name' and 'text'")
            pairs.append((root / name, str(text)))
    else:
        for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            txt = image.with_suffix(".txt")
            if txt.exists():
                pairs.append((image, txt.read_text().strip()))
    if not pairs:
        raise ValueError(f"no captioned images in {root} (need image + same-named .txt, or metadata.jsonl)")
    return pairs


class FolderData:
    """A user's captioned images, loaded once at ``resolution``."""

    procedural = False

    def __init__(self, path: str | Path, resolution: int, p_empty: float = 0.1):
        pairs = read_folder(path)
        self.images = np.stack([_load_image(p, resolution) for p, _ in pairs])
        self.captions = [c for _, c in pairs]
        self.p_empty = p_empty

    def __len__(self) -> int:
        return len(self.captions)

    def batch(self, rng: np.random.Generator, n: int, p_empty: float | None = None):
        idx = rng.integers(0, len(self.captions), size=n)
        pe = self.p_empty if p_empty is None else p_empty
        captions = ["" if rng.random() < pe else self.captions[i] for i in idx]
        return self.images[idx], captions

    def caption_corpus(self) -> list[str]:
        return list(self.captions)
