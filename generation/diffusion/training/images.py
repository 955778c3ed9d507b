"""Image conversions shared by the stages (uint8 NHWC <-> the VAE's -1..1 NCHW) and the sample grids they save."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generation.diffusion import dataset as shapes


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(shapes.to_unit_range(images))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_grid(images: np.ndarray, path: Path, rows: int = 1) -> None:
    n, h, w, _ = images.shape
    cols = math.ceil(n / rows)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = im
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
