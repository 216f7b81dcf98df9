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


class _Encoding:
    """A vocabulary being encoded: requests for the same one wait for it, not for the lock."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.text: torch.Tensor | None = None
        self.error: BaseException | None = None


class TextEmbeddingCache:
    """Text embeddings per vocabulary, computed once and kept for the most recent ``capacity``.

    Thread-safe: sessions served at once may ask for the same or different vocabularies. The
    lock only guards the table; encoding runs outside it, so a cached vocabulary is served while
    another one is encoded, and a second request for a vocabulary being encoded waits for that
    encoding instead of repeating it.

    Args:
        encode: ``names -> (N, D)`` embeddings (a source's :meth:`SegmentationSource.encode`).
        capacity: Vocabularies kept (least recently used dropped first).
    """

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], capacity: int) -> None:
        self._encode = encode
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._encoding: dict[tuple[str, ...], _Encoding] = {}
        self._lock = threading.Lock()
        self.computed = 0  # vocabularies encoded so far (a cache miss each)

    def get(self, names: list[str]) -> tuple[torch.Tensor, bool]:
        """``((N, D) embeddings, whether this call found them computed)`` for ``names``.

        Raises:
            Exception: whatever ``encode`` raised (also in the requests that waited for it).
        """
        key = tuple(names)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key], True
            pending = self._encoding.get(key)
            owner = pending is None
            if owner:
                pending = self._encoding[key] = _Encoding()
        if not owner:  # another request encodes this vocabulary right now
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.text, True
        try:
            pending.text = self._encode(list(names))  # outside the lock
        except BaseException as e:
            pending.error = e
            raise
        finally:
            with self._lock:
                del self._encoding[key]
                if pending.error is None:
                    self._entries[key] = pending.text
                    self.computed += 1
                    while len(self._entries) > self._capacity:
                        self._entries.popitem(last=False)
            pending.done.set()
        return pending.text, False
