"""Stable Diffusion's safety checker as an output check: `SafetyChecker(directory)(picture, metadata)`.

Loaded once per worker from a local directory (never downloaded): either a pipeline directory
(with `safety_checker/` and `feature_extractor/`) or one holding both the checker's weights and
its `preprocessor_config.json`. `generation.outputs` decides what a flagged image means.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class SafetyChecker:
    """Call with a PIL image and its metadata; returns a reason to hold the image, or False."""

    def __init__(self, directory: str):
        self.directory = Path(directory).expanduser()
        self._loaded = None
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._loaded is None:
                # Imported on first use, not with this module: `generation.outputs` names this class
                # in every web process, which should not load torch for a check it never runs.
                import torch
                from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
                from transformers import CLIPImageProcessor

                root = self.directory
                checker_dir = root / "safety_checker" if (root / "safety_checker").is_dir() else root
                processor_dir = root / "feature_extractor" if (root / "feature_extractor").is_dir() else root
                device = "cuda" if torch.cuda.is_available() else "cpu"
                checker = StableDiffusionSafetyChecker.from_pretrained(checker_dir, local_files_only=True)
                processor = CLIPImageProcessor.from_pretrained(processor_dir, local_files_only=True)
                self._loaded = (checker.to(device).eval(), processor, device)
            return self._loaded

    def __call__(self, picture, metadata):
        checker, processor, device = self.load()
        rgb = picture.convert("RGB")
        clip_input = processor(images=[rgb], return_tensors="pt").pixel_values.to(device, checker.dtype)
        _, has_nsfw = checker(images=[np.asarray(rgb, dtype=np.float32) / 255.0], clip_input=clip_input)
        return "the safety checker found a sensitive concept" if bool(has_nsfw[0]) else False
