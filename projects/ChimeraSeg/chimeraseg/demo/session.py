"""The web demo's logic, free of any web framework: inputs checked, a model run, files written.

One :class:`WebDemo` serves every session. Each request's :class:`Segmentation` is kept for the
last :attr:`Limits.kept_results` runs only, under a run id that is all a page session holds, so
memory does not grow with sessions. Everything the demo writes (download files, published
examples, Gradio's copies) lives in one folder that :meth:`WebDemo.close` removes.
:class:`InputError` carries the message the page shows for a bad input; the server goes on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from chimeraseg.clip.names import split_synonyms
from chimeraseg.data.io import DatasetError, ImageTooLargeError, fit_size, image_size, read_image
from chimeraseg.data.prediction_io import label_dtype, write_label_png, write_vocabulary_json
from chimeraseg.demo.render import UNSEEN_MARK, class_shares, heat_overlay, legend_html
from chimeraseg.demo.source import SegmentationSource, TextEmbeddingCache
from chimeraseg.demo.vocabulary import parse_vocabulary
from chimeraseg.deploy.schema import check_gamma

__all__ = ["DEFAULT_LIMITS", "InputError", "Limits", "Segmentation", "WebDemo"]


class InputError(ValueError):
    """A bad input of the page; its message is shown to the user as it is."""


@dataclass(frozen=True)
class Limits:
    """What the web demo accepts and keeps (docs/SECURITY.md, "Web demo limits").

    Attributes:
        max_side: Longer image sides are downscaled to this many pixels (the page says so);
            larger images are decoded at a reduced size, never at full size in RGB.
        max_pixels: Images with more pixels (read from the file's header) are refused before
            any decoding.
        max_upload_mb: The largest upload, in megabytes (the server refuses bigger files).
        max_classes: The most classes of one vocabulary.
        max_names: The most names (classes and their synonyms) of one vocabulary: a request
            costs names x the model's templates text-encoder prompts.
        max_name_chars: The longest name (a class or a synonym), in characters.
        max_vocabulary_chars: The longest vocabulary text, comments included.
        concurrency: Requests the model runs at once; later ones wait in the queue.
        queue_size: Requests that may wait; more are refused with a message.
        cached_vocabularies: Vocabularies whose text embeddings are kept in memory.
        kept_results: Runs whose results (for the class maps) and download files are kept;
            older ones are deleted from memory and disk.
        sessions: Browser sessions whose state Gradio keeps (the oldest is dropped first).
        session_minutes: A session's state (its last run id) expires after this many minutes.
        cache_minutes: Gradio's own copies (uploads, overlays, downloads) are deleted this many
            minutes after they were made.
    """

    max_side: int = 1024
    max_pixels: int = 40_000_000
    max_upload_mb: int = 20
    max_classes: int = 200
    max_names: int = 400
    max_name_chars: int = 60
    max_vocabulary_chars: int = 20_000
    concurrency: int = 2
    queue_size: int = 16
    cached_vocabularies: int = 32
    kept_results: int = 64
    sessions: int = 1000
    session_minutes: int = 60
    cache_minutes: int = 15


DEFAULT_LIMITS = Limits()


@dataclass
class Segmentation:
    """One session's result: what the page shows and what a class map needs.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image as segmented (after any downscaling).
        prediction: ``(H, W)`` class indices (the evaluator's γ rule), uint8 up to 256
            classes, else uint16.
        names: The vocabulary, in index order.
        unseen: Per class, whether it received γ.
        gamma: The γ used.
        overlay: ``(H, W, 3)`` uint8 RGB overlay with region names; None in a kept run (the
            page already has it).
        legend: HTML table of the predicted classes (colour, name, share, unseen mark).
        label_png: The label PNG written for download (class index per pixel).
        vocabulary_json: The ``vocabulary.json`` naming its values.
        message: What the page says about the run (model time, downscaling, cache).
        shares: ``(class index, share of pixels)``, largest first.
        run_id: The key of the kept run (:meth:`WebDemo.kept`); all a page session holds.
    """

    image: np.ndarray
    prediction: np.ndarray
    names: list[str]
    unseen: list[bool]
    gamma: float
    overlay: np.ndarray | None
    legend: str
    label_png: str
    vocabulary_json: str
    message: str
    shares: list[tuple[int, float]] = field(default_factory=list)
    run_id: str = ""

    def default_class(self) -> str:
        """The class whose map the page shows first: the largest unseen one, else the largest."""
        unseen = [i for i, _ in self.shares if self.unseen[i]]
        return self.names[(unseen or [i for i, _ in self.shares])[0]]


class WebDemo:
    """Runs a model source for the web page; one object shared by every session.

    Args:
        source: The loaded model (loaded once, before the server starts).
        limits: What is accepted and kept (:class:`Limits`).
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
        self.gradio_cache_dir = os.path.join(self.output_dir, "gradio")  # Gradio's copies
        self._runs: OrderedDict[str, tuple[str, Segmentation]] = OrderedDict()  # id: folder, run
        self._lock = threading.Lock()

    def close(self) -> None:
        """Removes the kept runs and their files (the whole folder when the demo created it)."""
        with self._lock:
            for folder, _ in self._runs.values():
                shutil.rmtree(folder, ignore_errors=True)
            self._runs.clear()
        if self._own_dir:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def claim_gradio_cache(self) -> None:
        """Points Gradio's cache (``GRADIO_TEMP_DIR``) at this demo's folder, so that
        :meth:`close` removes Gradio's copies too; one web demo per process.

        Call it before ``gradio`` is imported (some of its modules read the variable then) and
        before the page's components are made (each reads it when made).
        """
        os.environ["GRADIO_TEMP_DIR"] = self.gradio_cache_dir

    def publish_examples(self, paths: list[str]) -> list[str]:
        """Copies the example images into the demo's folder; returns the copies.

        The server then serves only these copies (and the demo's own files), never the folder
        the examples came from.
        """
        folder = os.path.join(self.output_dir, "examples")
        os.makedirs(folder, exist_ok=True)
        copies = []
        for i, path in enumerate(paths):
            copy = os.path.join(folder, f"{i}_{os.path.basename(path)}")  # unique names
            shutil.copyfile(path, copy)
            copies.append(copy)
        return copies

    def load_image(self, path: str | None) -> tuple[np.ndarray, str]:
        """``((H, W, 3) uint8 RGB image, note)``; images with a longer side are downscaled.

        The pixel count is checked from the file's header first; a larger image is decoded at
        a reduced size (:func:`~chimeraseg.data.io.read_image` with ``max_side``).

        Raises:
            InputError: no file, a file that is not an image, or one with too many pixels.
        """
        if not path:
            raise InputError("No image: upload one or pick an example.")
        name, most = os.path.basename(path), self.limits.max_pixels
        too_many = f"'{name}' has more than the {most:,} pixels this demo decodes"
        try:
            h, w = image_size(path)
            if h * w > most:
                raise InputError(f"{too_many} ({w}x{h}); downscale it first.")
            image = read_image(path, max_side=self.limits.max_side)  # (H', W', 3) RGB
        except ImageTooLargeError as e:
            raise InputError(f"{too_many}; downscale it first.") from e
        except DatasetError as e:
            message = f"'{name}' is not an image this demo can read (PNG, JPEG, ...)."
            raise InputError(message) from e
        if (w, h) == fit_size((w, h), self.limits.max_side):
            return image, ""
        return image, (
            f"Downscaled from {w}x{h} to {image.shape[1]}x{image.shape[0]} pixels "
            f"(the demo's maximum side is {self.limits.max_side})."
        )

    def check_prompt_cost(self, names: list[str]) -> None:
        """Refuses a vocabulary with more names (classes and synonyms) or longer names than the
        limits allow: a request costs names x templates text-encoder prompts.

        Raises:
            InputError: naming the limit and, for a long name, the name.
        """
        limits = self.limits
        words = [w for n in names for w in split_synonyms(n)]
        if len(words) > limits.max_names:
            raise InputError(
                f"The vocabulary has {len(words)} names (classes and synonyms); at most "
                f"{limits.max_names} are allowed."
            )
        for word in words:
            if len(word) > limits.max_name_chars:
                raise InputError(
                    f"The name '{word[:40]}...' has {len(word)} characters; at most "
                    f"{limits.max_name_chars} are allowed."
                )

    def segment(
        self, image_path: str | None, vocabulary: str, unseen: str, gamma: float
    ) -> Segmentation:
        """Segments an uploaded image with a vocabulary, writes the download files and keeps
        the run (the last :attr:`Limits.kept_results` runs are kept).

        Args:
            image_path: The uploaded file.
            vocabulary: One class per line, commas between synonyms (vocabulary-file syntax).
            unseen: Comma-separated names of the vocabulary that receive ``gamma``.
            gamma: Bias added to the unseen classes' logits before the argmax.

        Raises:
            InputError: any bad input, with the message for the page.
        """
        vocabulary, most = vocabulary or "", self.limits.max_vocabulary_chars
        if len(vocabulary) > most:
            raise InputError(
                f"The vocabulary has {len(vocabulary):,} characters; at most {most:,} are allowed."
            )
        try:
            names, unseen_ids = parse_vocabulary(
                vocabulary, unseen or "", self.limits.max_classes, "the vocabulary box"
            )
        except ValueError as e:
            raise InputError(f"{str(e)[0].upper()}{str(e)[1:]}.") from e
        self.check_prompt_cost(names)
        try:
            gamma = check_gamma(gamma, "γ")
        except ValueError as e:
            raise InputError(f"{e}.") from e
        image, note = self.load_image(image_path)
        start = time.perf_counter()
        text, cached = self.text.get(names)  # (N, D)
        text_ms = (time.perf_counter() - start) * 1e3
        mask = torch.zeros(len(names), dtype=torch.bool)
        mask[unseen_ids] = True
        start = time.perf_counter()
        prediction = self.source.predict(image, text, mask, float(gamma))  # (H, W)
        prediction = prediction.astype(label_dtype(len(names)))  # what a kept run holds
        model_ms = (time.perf_counter() - start) * 1e3
        flags = mask.tolist()
        colors = self.source.colors(names)
        labels = [n + (f" {UNSEEN_MARK}" if u else "") for n, u in zip(names, flags)]
        shares = class_shares(prediction, len(names))
        timing = f"Model: {model_ms:.0f} ms for {image.shape[1]}x{image.shape[0]} pixels"
        timing += f", {len(names)} classes; text embeddings "
        timing += "from the cache." if cached else f"computed in {text_ms:.0f} ms."
        folder = tempfile.mkdtemp(prefix="result_", dir=self.output_dir)
        try:
            png, vocab_json = self._write_files(folder, image_path, prediction, names, flags, gamma)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # nothing half-written is left or kept
            raise
        result = Segmentation(
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
            run_id=os.path.basename(folder),
        )
        self._keep(folder, result)
        return result

    def _write_files(
        self,
        folder: str,
        image_path: str,
        prediction: np.ndarray,
        names: list[str],
        unseen: list[bool],
        gamma: float,
    ) -> tuple[str, str]:
        """Writes ``<stem>_labels.png`` and ``vocabulary.json`` (as ``tools/demo.py
        --save-labels`` does) into the run's new folder; returns both paths."""
        stem = os.path.splitext(os.path.basename(image_path))[0] or "image"
        png = os.path.join(folder, stem + "_labels.png")
        write_label_png(png, prediction, len(names))
        vocab_json = os.path.join(folder, "vocabulary.json")
        write_vocabulary_json(vocab_json, names, unseen, float(gamma))
        return png, vocab_json

    def _keep(self, folder: str, result: Segmentation) -> None:
        """Keeps the run (without its overlay); the oldest beyond the limit are deleted."""
        with self._lock:
            self._runs[result.run_id] = (folder, replace(result, overlay=None))
            while len(self._runs) > self.limits.kept_results:
                old_folder, _ = self._runs.popitem(last=False)[1]
                shutil.rmtree(old_folder, ignore_errors=True)

    def kept(self, run_id: str | None) -> Segmentation | None:
        """The kept run ``run_id``; None for no id.

        Raises:
            InputError: a run that is no longer kept (older than the last kept runs).
        """
        if not run_id:
            return None
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise InputError(
                f"That result is no longer kept (the demo keeps the last "
                f"{self.limits.kept_results} runs): segment the image again."
            )
        return run[1]

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
