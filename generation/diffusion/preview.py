"""Cheap step previews: a linear latent -> RGB projection of the predicted clean latents (x0).

Decoding with the VAE every step would cost more than the step itself on a CPU; a 4x3 matrix
plus a bias applied per latent pixel gives a recognisable, 1/8-resolution colour preview for a
few microseconds per pixel. This is the "latent2rgb" / "Approx cheap" preview of ComfyUI and
AUTOMATIC1111; the SD1.x and SDXL factors are the ones ComfyUI ships
(comfy/latent_formats.py). For any other VAE we fit the factors once by least squares
against the model's own decoder (:func:`fit_latent_preview`) and cache them.

Convention (also for ``latent_preview.json`` next to a model): the projection applies to the
*scaled* latents the denoising loop works on (``vae.encode(x).latent_dist.mean * scaling_factor``)
and yields RGB in [-1, 1]:  ``rgb[c] = sum_k latent[k] * matrix[k][c] + bias[c]``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

# ComfyUI comfy/latent_formats.py: SD15 (also right for SD2.x, which shares the VAE) and SDXL.
SD1_FACTORS = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]
SD1_BIAS = [0.0, 0.0, 0.0]
SDXL_FACTORS = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
]
SDXL_BIAS = [0.1084, -0.0175, -0.0011]

PREVIEW_FILE_NAME = "latent_preview.json"


@dataclass(frozen=True)
class LatentPreview:
    """A latent -> RGB projection. ``matrix`` is (latent_channels, 3), ``bias`` is (3,)."""

    matrix: torch.Tensor
    bias: torch.Tensor
    source: str  # "sd1", "sdxl", "file:<path>", "fitted"

    @classmethod
    def from_lists(cls, matrix: Sequence[Sequence[float]], bias: Sequence[float], source: str) -> "LatentPreview":
        m = torch.tensor(matrix, dtype=torch.float32)
        b = torch.tensor(bias, dtype=torch.float32)
        if m.ndim != 2 or m.shape[1] != 3 or b.shape != (3,):
            raise ValueError(f"latent preview factors must be [[r,g,b] x channels] and [r,g,b]; got {tuple(m.shape)}")
        return cls(m, b, source)

    @classmethod
    def load(cls, path: str | Path) -> "LatentPreview":
        data = json.loads(Path(path).read_text())
        return cls.from_lists(data["matrix"], data["bias"], f"file:{path}")

    def to_dict(self) -> dict:
        return {"matrix": self.matrix.tolist(), "bias": self.bias.tolist()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @property
    def channels(self) -> int:
        return int(self.matrix.shape[0])

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) scaled latents -> (B, H, W, 3) uint8 on the CPU."""
        x = latents.detach()
        batch, channels, height, width = x.shape
        # One fused multiply-add with the [-1, 1] -> [0, 255] mapping folded into the factors.
        matrix = (self.matrix * 127.5).to(device=x.device)
        bias = ((self.bias + 1.0) * 127.5).to(device=x.device)
        pixels = x.float().permute(0, 2, 3, 1).reshape(-1, channels)
        rgb = torch.addmm(bias, pixels, matrix).clamp_(0, 255)
        return rgb.to(torch.uint8).view(batch, height, width, 3).cpu()


def latents_to_preview(preview: LatentPreview, latents: torch.Tensor, size: int | None = None) -> Image.Image:
    """One preview image for a batch of latents: the images side by side in a near-square grid.

    ``size`` bounds the longer side of the result (nearest-neighbour resize, cheap); ``None``
    keeps the latent resolution (1/8 of the image for SD-style VAEs).
    """
    pixels = preview.project(latents).numpy()
    batch, height, width, _ = pixels.shape
    if batch == 1:
        grid = pixels[0]
    else:
        cols = int(np.ceil(np.sqrt(batch)))
        rows = int(np.ceil(batch / cols))
        grid = np.zeros((rows * height, cols * width, 3), dtype=np.uint8)
        for index in range(batch):
            r, c = divmod(index, cols)
            grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = pixels[index]
    image = Image.fromarray(grid, "RGB")
    if size:
        scale = size / max(image.size)
        new_size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        if new_size != image.size:
            image = image.resize(new_size, Image.NEAREST)
    return image


def known_latent_preview(family: str, vae_config) -> LatentPreview | None:
    """Published factors for VAEs we recognise: the SD1.x/2.x VAE and the SDXL VAE."""
    channels = vae_config.get("latent_channels", 4)
    blocks = list(vae_config.get("block_out_channels", []))
    scaling = float(vae_config.get("scaling_factor", 0.18215))
    if channels != 4 or blocks != [128, 256, 512, 512]:
        return None
    if family == "sdxl" and abs(scaling - 0.13025) < 1e-6:
        return LatentPreview.from_lists(SDXL_FACTORS, SDXL_BIAS, "sdxl")
    if family in ("sd1", "sd2") and abs(scaling - 0.18215) < 1e-6:
        return LatentPreview.from_lists(SD1_FACTORS, SD1_BIAS, "sd1")
    return None


def _fitting_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Synthetic images in [-1, 1] that cover the colour cube: smooth random colour fields,
    flat colours and hard-edged blocks, so the fit sees both gradients and saturated areas."""
    images = []
    for index in range(count):
        kind = index % 3
        if kind == 0:
            coarse = torch.rand(1, 3, 4, 4, generator=generator)
            image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        elif kind == 1:
            image = torch.rand(1, 3, 1, 1, generator=generator).expand(1, 3, size, size)
        else:
            coarse = torch.rand(1, 3, 4, 4, generator=generator)
            image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")
        images.append(image)
    return torch.cat(images) * 2 - 1


@torch.no_grad()
def fit_latent_preview(vae, *, count: int = 12, size: int | None = None, seed: int = 0) -> LatentPreview:
    """Least-squares fit of ``rgb ~ latent @ M + b`` against the VAE's own decoder.

    Encodes synthetic images, decodes their latents, averages each decoded image over the
    patch that one latent pixel covers, and solves for the 4x3 (channels x 3) matrix plus bias.
    Runs once per model (cached by the caller): a second or two for an SD-sized VAE on a CPU.
    """
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    size = size or scale * 16
    generator = torch.Generator("cpu").manual_seed(seed)
    param = next(vae.parameters())
    images = _fitting_images(count, size, generator).to(device=param.device, dtype=param.dtype)
    scaling = float(vae.config.get("scaling_factor", 1.0))
    shift = vae.config.get("shift_factor", None) or 0.0
    latents = vae.encode(images).latent_dist.mean
    decoded = vae.decode(latents).sample.float().clamp(-1, 1)
    scaled = ((latents - shift) * scaling).float()
    target = torch.nn.functional.avg_pool2d(decoded, scale)  # (B, 3, h, w)
    channels = scaled.shape[1]
    x = scaled.permute(0, 2, 3, 1).reshape(-1, channels).cpu().double()
    y = target.permute(0, 2, 3, 1).reshape(-1, 3).cpu().double()
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    # A whisper of ridge regularisation keeps the factors finite when some latent channel is
    # (nearly) a combination of others, as in an untrained or degenerate VAE.
    gram = design.T @ design
    ridge = 1e-8 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    solution = torch.linalg.solve(gram + ridge, design.T @ y)  # (channels + 1, 3)
    return LatentPreview(solution[:channels].float(), solution[channels].float(), "fitted")


_FITTED: dict[str, LatentPreview] = {}
_FITTED_LOCK = threading.Lock()


def fitted_latent_preview(cache_key: str, vae) -> LatentPreview:
    """:func:`fit_latent_preview`, once per ``cache_key`` (a model content hash) per process."""
    with _FITTED_LOCK:
        if cache_key not in _FITTED:
            _FITTED[cache_key] = fit_latent_preview(vae)
        return _FITTED[cache_key]
