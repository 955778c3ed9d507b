"""A resident model cache: a worker loads a model once and keeps it.

Least-recently-used models are evicted once the estimated weight memory of the resident models
exceeds ``max_bytes``. The model just asked for is never evicted, so a single model larger than
the budget still loads (and is dropped as soon as another one is needed). Thread-safe: worker
threads share one cache, and two threads asking for the same model at once cause one load.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

from .loading import LoadedModel, load_pipeline

logger = logging.getLogger(__name__)


class _Slot:
    """One cache entry; its lock serialises the load of that key only."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.model: LoadedModel | None = None
        self.nbytes = 0


class ModelCache:
    """``get(source, **load_kwargs)`` returns a resident :class:`LoadedModel`, loading it on a miss."""

    def __init__(self, max_bytes: int, loader: Callable[..., LoadedModel] = load_pipeline):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = int(max_bytes)
        self.loader = loader
        self.load_count = 0
        self.evictions = 0
        self._slots: "OrderedDict[Hashable, _Slot]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(source: str, **kwargs: Any) -> Hashable:
        return (str(source), tuple(sorted((k, str(v)) for k, v in kwargs.items() if v is not None)))

    def get(self, source: str, **kwargs: Any) -> LoadedModel:
        key = self.key(source, **kwargs)
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
        with slot.lock:
            if slot.model is None:
                try:
                    model = self.loader(source, **kwargs)
                except BaseException:
                    with self._lock:
                        if self._slots.get(key) is slot:
                            del self._slots[key]
                    raise
                with self._lock:
                    self.load_count += 1
                    slot.model = model
                    slot.nbytes = _estimate_bytes(model)
                    if self._slots.get(key) is not slot:  # evicted while loading: keep it resident again
                        self._slots[key] = slot
                    self._slots.move_to_end(key)
                    self._evict_over_budget(keep=key)
            return slot.model

    def _evict_over_budget(self, keep: Hashable) -> None:
        evicted = False
        for key in list(self._slots):
            if self.total_bytes <= self.max_bytes:
                break
            slot = self._slots[key]
            if key == keep or slot.model is None:
                continue
            logger.info("evicting model %s (%d MB) from the cache", key[0], slot.nbytes // 2**20)
            del self._slots[key]
            self.evictions += 1
            evicted = True
        if evicted:
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # pragma: no cover
                pass

    @property
    def total_bytes(self) -> int:
        return sum(slot.nbytes for slot in self._slots.values() if slot.model is not None)

    def sources(self) -> list[str]:
        """Resident models, least recently used first."""
        with self._lock:
            return [key[0] for key, slot in self._slots.items() if slot.model is not None]

    def models(self) -> list[LoadedModel]:
        """The resident models, least recently used first."""
        with self._lock:
            return [slot.model for slot in self._slots.values() if slot.model is not None]

    def holds(self, source: str, **kwargs: Any) -> bool:
        """Whether `get` with these arguments would answer without loading."""
        with self._lock:
            slot = self._slots.get(self.key(source, **kwargs))
            return slot is not None and slot.model is not None

    def __contains__(self, source: object) -> bool:
        return str(source) in self.sources()

    def __len__(self) -> int:
        return len(self.sources())

    def evict(self, source: str) -> None:
        """Drop every resident entry of ``source`` (e.g. after staff replaced its files)."""
        with self._lock:
            for key in [k for k in self._slots if k[0] == str(source)]:
                del self._slots[key]

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()


def _estimate_bytes(model: Any) -> int:
    nbytes = getattr(model, "nbytes", None)
    return int(nbytes) if isinstance(nbytes, (int, float)) else 0
