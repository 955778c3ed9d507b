"""The Bayes-optimal denoiser that `benchmarks/denoiser_gap.py` measures the UNet against is
exact only if it weighs every image the dataset can draw for a caption, and nothing else."""

import importlib.util
from pathlib import Path

import numpy as np

from generation.diffusion import dataset as shapes

_path = Path(__file__).resolve().parents[3] / "benchmarks" / "denoiser_gap.py"
_spec = importlib.util.spec_from_file_location("denoiser_gap", _path)
denoiser_gap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(denoiser_gap)


def test_the_optimal_denoiser_weighs_every_image_a_caption_allows_and_only_those():
    rng = np.random.default_rng(0)
    for _ in range(300):
        spec = shapes.sample_spec(rng)
        candidates = denoiser_gap.allowed_specs(spec)
        lo, hi = shapes.SIZES[spec.size]
        assert spec in candidates
        assert len(set(candidates)) == len(candidates) == (hi - lo + 1) * (2 * shapes.POSITION_JITTER + 1) ** 2
        assert all(c.attributes() == spec.attributes() for c in candidates)
