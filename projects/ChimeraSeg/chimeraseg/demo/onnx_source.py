"""The web demo's ONNX model source (``tools/web_demo.py --onnx DIR``): no detectron2 needed.

A thin adapter of :class:`~chimeraseg.deploy.runtime.OnnxSegmenter` to
:class:`~chimeraseg.demo.source.SegmentationSource`. The runtime keeps one vocabulary, so each
call sets the session's embeddings and predicts under one lock (onnxruntime runs its own threads
inside a call). The export has no CLIP image encoder: no class similarity map. A request the
runtime refuses (an image smaller than the model's minimum, a graph that fails on it) becomes the
page's one-line :class:`~chimeraseg.demo.session.InputError`; the server goes on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import torch

from chimeraseg.demo.session import InputError
from chimeraseg.deploy.loading import brief
from chimeraseg.deploy.runtime import OnnxSegmenter
from chimeraseg.utils.demo_images import blend_overlay, palette

__all__ = ["OnnxSource"]


@contextlib.contextmanager
def _as_input_error() -> Iterator[None]:
    """Turns the runtime's ValueError (ExportError included) into the page's InputError."""
    try:
        yield
    except InputError:
        raise
    except ValueError as e:
        message = brief(e)
        raise InputError(f"{message[0].upper()}{message[1:]}") from None


class OnnxSource:
    """An export folder's segmenter behind the web demo's source interface.

    Args:
        segmenter: The runtime with a text graph (``graph="fp32"`` or ``"int8"``; a baked
            vocabulary cannot take the page's words).
        description: One line naming the export.

    Raises:
        ValueError: a segmenter of the baked graph.
    """

    def __init__(self, segmenter: OnnxSegmenter, description: str) -> None:
        if segmenter.graph == "baked":
            raise ValueError(
                f"{segmenter.folder}: the baked graph has a fixed vocabulary; the web demo needs "
                "the fp32 or int8 graph with the text graph"
            )
        meta = segmenter.metadata
        self.segmenter, self.description = segmenter, description
        self.default_vocabulary = list(meta.train_vocabulary)
        self.default_unseen = list(meta.unseen_ids)
        self.default_gamma = float(meta.gamma)
        self._colors = meta.colors
        self._lock = threading.Lock()

    def encode(self, names: list[str]) -> torch.Tensor:
        """``(N, D)`` unit text embeddings from the export's text graph.

        Raises:
            InputError: the runtime's refusal, on one line.
        """
        with self._lock, _as_input_error():
            return torch.from_numpy(self.segmenter.embed_vocabulary(names))

    def predict(
        self, image_rgb: np.ndarray, text: torch.Tensor, unseen: torch.Tensor, gamma: float
    ) -> np.ndarray:
        """``(H, W)`` int64 class ids (the runtime's γ rule) over the session's embeddings.

        Raises:
            InputError: the runtime's refusal, on one line.
        """
        ids = torch.nonzero(unseen).flatten().tolist()
        placeholders = [f"class {i}" for i in range(text.shape[0])]  # the runtime only counts
        with self._lock, _as_input_error():
            self.segmenter.set_vocabulary(placeholders, ids, embeddings=text.cpu().numpy())
            return self.segmenter.predict(image_rgb, gamma).labels

    def class_similarity(self, image_rgb: np.ndarray, region: np.ndarray) -> None:
        """None: the export has no CLIP image encoder (no CLS token)."""
        return None

    def colors(self, names: list[str]) -> list[list[int]]:
        """The dataset's colours for its own vocabulary, else a fixed palette."""
        if self._colors and list(names) == self.default_vocabulary:
            return [list(c) for c in self._colors]
        return palette(len(names))

    def overlay(
        self, image_rgb: np.ndarray, prediction: np.ndarray, labels: list[str], colors: list
    ) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB colour blend (the legend names the classes)."""
        return blend_overlay(image_rgb, prediction, colors)
