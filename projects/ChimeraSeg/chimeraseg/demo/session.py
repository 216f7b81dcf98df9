"""The web demo's logic, free of any web framework: inputs checked, a model run, files written.

One :class:`WebDemo` serves every session; what a session did lives in the :class:`Segmentation`
it gets back (the page keeps it as that session's state), never in the demo object.
:class:`InputError` carries the message the page shows for a bad input; the server goes on.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image

from chimeraseg.data.io import DatasetError, read_image
from chimeraseg.data.prediction_io import write_label_png, write_vocabulary_json
from chimeraseg.demo.render import UNSEEN_MARK, class_shares, heat_overlay, legend_html
from chimeraseg.demo.source import SegmentationSource, TextEmbeddingCache
from chimeraseg.demo.vocabulary import parse_vocabulary

__all__ = ["DEFAULT_LIMITS", "InputError", "Limits", "Segmentation", "WebDemo"]


class InputError(ValueError):
    """A bad input of the page; its message is shown to the user as it is."""


@dataclass(frozen=True)
class Limits:
    """What the web demo accepts and keeps.

    Attributes:
        max_side: Longer image sides are downscaled to this many pixels (the page says so).
        max_classes: The most classes of one vocabulary.
        max_upload_mb: The largest upload, in megabytes (the server refuses bigger files).
        concurrency: Requests the model runs at once; later ones wait in the queue.
        queue_size: Requests that may wait; more are refused with a message.
        cached_vocabularies: Vocabularies whose text embeddings are kept in memory.
        kept_results: Requests whose download files are kept on disk (older ones are deleted).
    """

    max_side: int = 1024
    max_classes: int = 200
    max_upload_mb: int = 20
    concurrency: int = 2
    queue_size: int = 16
    cached_vocabularies: int = 32
    kept_results: int = 64


DEFAULT_LIMITS = Limits()


@dataclass
class Segmentation:
    """One session's result: what the page shows and what a class map needs.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image as segmented (after any downscaling).
        prediction: ``(H, W)`` int64 class indices (the evaluator's γ rule).
        names: The vocabulary, in index order.
        unseen: Per class, whether it received γ.
        gamma: The γ used.
        overlay: ``(H, W, 3)`` uint8 RGB overlay with region names.
        legend: HTML table of the predicted classes (colour, name, share, unseen mark).
        label_png: The label PNG written for download (class index per pixel).
        vocabulary_json: The ``vocabulary.json`` naming its values.
        message: What the page says about the run (model time, downscaling, cache).
        shares: ``(class index, share of pixels)``, largest first.
    """

    image: np.ndarray
    prediction: np.ndarray
    names: list[str]
    unseen: list[bool]
    gamma: float
    overlay: np.ndarray
    legend: str
    label_png: str
    vocabulary_json: str
    message: str
    shares: list[tuple[int, float]] = field(default_factory=list)

    def default_class(self) -> str:
        """The class whose map the page shows first: the largest unseen one, else the largest."""
        unseen = [i for i, _ in self.shares if self.unseen[i]]
        return self.names[(unseen or [i for i, _ in self.shares])[0]]


class WebDemo:
    """Runs a model source for the web page; one object shared by every session.

    Args:
        source: The loaded model (loaded once, before the server starts).
        limits: What is accepted (:class:`Limits`).
        output_dir: Where download files are written (None = a new temporary folder, removed by
            :meth:`close`).
    """

    def __init__(
        self, source: SegmentationSource, limits: Limits, output_dir: str | None = None
    ) -> None:
        self.source, self.limits = source, limits
        self.text = TextEmbeddingCache(source.encode, limits.cached_vocabularies)
        self._own_dir = output_dir is None
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="chimeraseg_web_")
        self._results: deque[str] = deque()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Removes the download files (the whole folder when the demo created it)."""
        with self._lock:
            for folder in self._results:
                shutil.rmtree(folder, ignore_errors=True)
            self._results.clear()
        if self._own_dir:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def load_image(self, path: str | None) -> tuple[np.ndarray, str]:
        """``((H, W, 3) uint8 RGB image, note)``; images with a longer side are downscaled.

        Raises:
            InputError: no file, a file that is not an image, or one too large to decode.
        """
        if not path:
            raise InputError("No image: upload one or pick an example.")
        name = os.path.basename(path)
        try:
            image = read_image(path)  # (H, W, 3) RGB
        except Image.DecompressionBombError as e:
            raise InputError(f"'{name}' has too many pixels to decode safely ({e}).") from e
        except DatasetError as e:
            message = f"'{name}' is not an image this demo can read (PNG, JPEG, ...)."
            raise InputError(message) from e
        h, w = image.shape[:2]
        side = self.limits.max_side
        if max(h, w) <= side:
            return image, ""
        scale = side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # (W', H') for OpenCV
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return image, (
            f"Downscaled from {w}x{h} to {size[0]}x{size[1]} pixels "
            f"(the demo's maximum side is {side})."
        )

    def segment(
        self, image_path: str | None, vocabulary: str, unseen: str, gamma: float
    ) -> Segmentation:
        """Segments an uploaded image with a vocabulary and writes the download files.

        Args:
            image_path: The uploaded file.
            vocabulary: One class per line, commas between synonyms (vocabulary-file syntax).
            unseen: Comma-separated names of the vocabulary that receive ``gamma``.
            gamma: Bias added to the unseen classes' logits before the argmax.

        Raises:
            InputError: any bad input, with the message for the page.
        """
        try:
            names, unseen_ids = parse_vocabulary(
                vocabulary, unseen or "", self.limits.max_classes, "the vocabulary box"
            )
        except ValueError as e:
            raise InputError(f"{str(e)[0].upper()}{str(e)[1:]}.") from e
        if gamma is None or not math.isfinite(float(gamma)):
            raise InputError(f"γ must be a finite number, not {gamma!r}.")
        image, note = self.load_image(image_path)
        start = time.perf_counter()
        text, cached = self.text.get(names)  # (N, D)
        text_ms = (time.perf_counter() - start) * 1e3
        mask = torch.zeros(len(names), dtype=torch.bool)
        mask[unseen_ids] = True
        start = time.perf_counter()
        prediction = self.source.predict(image, text, mask, float(gamma))  # (H, W)
        model_ms = (time.perf_counter() - start) * 1e3
        flags = mask.tolist()
        colors = self.source.colors(names)
        labels = [n + (f" {UNSEEN_MARK}" if u else "") for n, u in zip(names, flags)]
        shares = class_shares(prediction, len(names))
        png, vocab_json = self._write_files(image_path, prediction, names, flags, float(gamma))
        timing = f"Model: {model_ms:.0f} ms for {image.shape[1]}x{image.shape[0]} pixels"
        timing += f", {len(names)} classes; text embeddings "
        timing += "from the cache." if cached else f"computed in {text_ms:.0f} ms."
        return Segmentation(
            image=image,
            prediction=prediction,
            names=names,
            unseen=flags,
            gamma=float(gamma),
            overlay=self.source.overlay(image, prediction, labels, colors),
            legend=legend_html(shares, names, flags, colors),
            label_png=png,
            vocabulary_json=vocab_json,
            message=" ".join(m for m in (timing, note) if m),
            shares=shares,
        )

    def _write_files(
        self,
        image_path: str,
        prediction: np.ndarray,
        names: list[str],
        unseen: list[bool],
        gamma: float,
    ) -> tuple[str, str]:
        """Writes ``<stem>_labels.png`` and ``vocabulary.json`` (as ``tools/demo.py
        --save-labels`` does) into a new folder per request; returns both paths."""
        folder = tempfile.mkdtemp(prefix="result_", dir=self.output_dir)
        stem = os.path.splitext(os.path.basename(image_path))[0] or "image"
        png = os.path.join(folder, stem + "_labels.png")
        write_label_png(png, prediction, len(names))
        vocab_json = os.path.join(folder, "vocabulary.json")
        write_vocabulary_json(vocab_json, names, unseen, gamma)
        with self._lock:
            self._results.append(folder)
            while len(self._results) > self.limits.kept_results:
                shutil.rmtree(self._results.popleft(), ignore_errors=True)
        return png, vocab_json

    def class_map(self, result: Segmentation | None, name: str | None) -> tuple[np.ndarray, str]:
        """``((H, W, 3) heat overlay, message)``: the Fig. 8 map of one class of ``result``.

        The class's CLS token is the CLIP teacher's CLS of the image with everything outside the
        class's predicted region blanked; the map is its cosine with every dense feature.

        Raises:
            InputError: no result yet, a class outside its vocabulary, a class with no predicted
                pixel, or a source without the CLIP teacher.
        """
        if result is None:
            raise InputError("Segment an image first; the map is of one of its classes.")
        if name not in result.names:
            raise InputError(f"'{name}' is not in the vocabulary of the last run.")
        region = result.prediction == result.names.index(name)  # (H, W)
        if not region.any():
            raise InputError(
                f"'{name}' has no pixel in the prediction, so it has no region for its CLS token: "
                "choose a class of the legend."
            )
        start = time.perf_counter()
        similarity = self.source.class_similarity(result.image, region)
        if similarity is None:
            raise InputError("This model source has no CLIP teacher, so no similarity map.")
        ms = (time.perf_counter() - start) * 1e3
        share = float(region.mean())
        message = f"CLS token of '{name}' ({100 * share:.1f}% of the pixels); map in {ms:.0f} ms."
        return heat_overlay(result.image, similarity), message
