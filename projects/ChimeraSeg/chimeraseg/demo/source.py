"""What the web demo needs from a model: the interface every model source implements.

A source holds one loaded model shared by all sessions. It never keeps a session's vocabulary:
every call receives the text embeddings it works with, so sessions with different vocabularies
can run at once. :class:`TextEmbeddingCache` computes those embeddings once per vocabulary.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

__all__ = ["SegmentationSource", "TextEmbeddingCache"]


class SegmentationSource(Protocol):
    """A loaded segmentation model (detectron2: :mod:`chimeraseg.d2.web_source`).

    Attributes:
        description: One line naming the model, its weights and its CLIP.
        default_vocabulary: The class names the page starts with (the training dataset's).
        default_unseen: Indices of ``default_vocabulary`` that are unseen classes.
        default_gamma: The γ the model was evaluated with (``TEST.GAMMA``).
    """

    description: str
    default_vocabulary: list[str]
    default_unseen: list[int]
    default_gamma: float

    def encode(self, names: list[str]) -> torch.Tensor:
        """``(N, D)`` text embeddings of ``N`` class names (commas between synonyms)."""
        ...

    def predict(
        self, image_rgb: np.ndarray, text: torch.Tensor, unseen: torch.Tensor, gamma: float
    ) -> np.ndarray:
        """``(H, W)`` int64 class ids of an ``(H, W, 3)`` uint8 RGB image over ``(N, D)`` text
        embeddings: ``argmax_c z_c + γ·[c unseen]`` (the evaluator's rule; ``unseen`` is an
        ``(N,)`` bool mask)."""
        ...

    def class_similarity(self, image_rgb: np.ndarray, region: np.ndarray) -> np.ndarray | None:
        """``(H, W)`` cosine of the CLS token of ``region`` (``(H, W)`` bool) with the dense
        features (Fig. 8); None when the source cannot compute it."""
        ...

    def colors(self, names: list[str]) -> list[list[int]]:
        """One RGB colour per class name."""
        ...

    def overlay(
        self, image_rgb: np.ndarray, prediction: np.ndarray, labels: list[str], colors: list
    ) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB: the ``(H, W)`` class ids drawn over the image, regions
        named by ``labels``."""
        ...


class TextEmbeddingCache:
    """Text embeddings per vocabulary, computed once and kept for the most recent ``capacity``.

    Thread-safe: sessions served at once may ask for the same or different vocabularies.

    Args:
        encode: ``names -> (N, D)`` embeddings (a source's :meth:`SegmentationSource.encode`).
        capacity: Vocabularies kept (least recently used dropped first).
    """

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], capacity: int) -> None:
        self._encode = encode
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # vocabularies encoded so far (a cache miss each)

    def get(self, names: list[str]) -> tuple[torch.Tensor, bool]:
        """``((N, D) embeddings, whether they came from the cache)`` for ``names``."""
        key = tuple(names)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key], True
            text = self._encode(list(names))  # under the lock: one encoding per vocabulary
            self._entries[key] = text
            self.computed += 1
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
            return text, False
