"""``OnnxSegmenter``: a ChimeraSeg export on RGB arrays, with numpy and onnxruntime only.

No detectron2, and no torch unless a vocabulary is embedded here (the CLIP tokenizer is
open_clip's): a folder with a baked vocabulary (``segmenter.onnx``) runs on numpy and
onnxruntime alone. Predictions follow the PyTorch path step by step: test-time resize (the
config's shortest-edge rule), padding with the mean colour to ``size_divisibility``, the image
graph, cosine logits ``/ τ``, one bilinear resample to the output size (or overlap-averaged
sliding windows), and the evaluator's γ rule (``argmax_c z_c + γ·[c unseen]``, first index on
ties).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from chimeraseg.deploy.loading import brief, load_session
from chimeraseg.deploy.metadata import (
    BAKED_GRAPH,
    IMAGE_GRAPH,
    IMAGE_GRAPH_INT8,
    TEXT_GRAPH,
    ExportError,
    ExportMetadata,
    read_metadata,
)
from chimeraseg.deploy.resample import (
    bilinear,
    pad_to_multiple,
    resize_logits,
    resize_shortest_edge,
)
from chimeraseg.deploy.schema import check_gamma
from chimeraseg.deploy.text import embed_class_names
from chimeraseg.utils.windows import window_starts

__all__ = ["GRAPHS", "OnnxSegmenter", "Prediction", "import_onnxruntime", "session_options"]

# Which image graph the segmenter runs: fp32 + text graph, int8 + text graph, baked vocabulary.
GRAPHS = ("fp32", "int8", "baked")
_IMAGE_FILES = {"fp32": IMAGE_GRAPH, "int8": IMAGE_GRAPH_INT8, "baked": BAKED_GRAPH}


def import_onnxruntime() -> Any:
    """The onnxruntime module, or an ImportError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "chimeraseg.deploy needs onnxruntime: pip install onnxruntime (the version pinned in "
            "requirements/ci.txt)"
        ) from e
    return onnxruntime


@dataclass(frozen=True)
class Prediction:
    """One image's segmentation.

    Attributes:
        labels: ``(H, W)`` int64 vocabulary indices (γ rule applied).
        scores: ``(N, H, W)`` float32 unbiased logits ``cos / τ`` per class.
        names: the vocabulary ``N``.
        unseen_mask: ``(N,)`` bool, the classes that received γ.
        gamma: the γ used.
    """

    labels: np.ndarray
    scores: np.ndarray
    names: list[str]
    unseen_mask: np.ndarray
    gamma: float


def session_options(ort: Any, threads: int) -> Any:
    """The runtime's onnxruntime ``SessionOptions``: ``threads`` intra-op threads (0 = its
    default) and no CPU memory arena, which keeps every block it grew to and so doubled the peak
    (MiT-B0, 512x512, batch 8: 10.7 GB with it, 5.0 GB without)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_cpu_mem_arena = False
    return options


def check_rgb(image: Any, what: str = "image") -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` uint8 array, or a ValueError naming its shape or dtype."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what}: expected a numpy (H, W, 3) uint8 RGB array, got {type(image)}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: shape {image.shape} is not an RGB image (H, W, 3)")
    if image.size == 0:
        raise ValueError(f"{what}: shape {image.shape} is empty")
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: dtype {image.dtype}; expected uint8 RGB values 0..255")
    return image


class OnnxSegmenter:
    """Segments RGB images with an export folder of ``tools/export_onnx.py``.

    Args:
        folder: the export folder (``metadata.json`` and the graphs).
        graph: ``"fp32"`` (image + text graphs), ``"int8"`` (quantised image graph + text graph)
            or ``"baked"`` (``segmenter.onnx``, its vocabulary only); None = ``"baked"`` when
            the folder has it, else ``"fp32"``.
        threads: onnxruntime intra-op threads (0 = onnxruntime's default).
        mode: ``"whole"`` or ``"slide"``; None = the source config's ``TEST.MODE``.

    Raises:
        ExportError: a folder that is not a (complete, unchanged) export of one model.
        ImportError: onnxruntime is not installed.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        graph: str | None = None,
        threads: int = 0,
        mode: str | None = None,
    ) -> None:
        self.folder = os.fspath(folder)
        self.metadata: ExportMetadata = read_metadata(self.folder)
        meta = self.metadata
        graph = graph or ("baked" if BAKED_GRAPH in meta.files else "fp32")
        if graph not in GRAPHS:
            raise ValueError(f"OnnxSegmenter: graph={graph!r} is not one of {GRAPHS}")
        self.mode = mode or meta.inference["mode"]
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"OnnxSegmenter: mode={self.mode!r} is not 'whole' or 'slide'")
        self.graph = graph
        if graph == "baked" and meta.baked is None:
            raise ExportError(f"{self.folder}: the export has no baked graph ({BAKED_GRAPH})")
        ort = import_onnxruntime()
        self._image = self._session(ort, _IMAGE_FILES[graph], threads)
        self._text = None if graph == "baked" else self._session(ort, TEXT_GRAPH, threads)
        self._mean = np.asarray(meta.pixel_mean, dtype=np.float32)
        self.names: list[str] = []
        self.unseen_mask = np.zeros(0, dtype=bool)
        self._text_embeddings: np.ndarray | None = None
        if graph == "baked":
            self.names = list(meta.baked.names)
            self.unseen_mask = _mask(len(self.names), meta.baked.unseen_ids)
        else:
            self.set_vocabulary(meta.train_vocabulary, meta.unseen_ids)

    def _session(self, ort: Any, name: str, threads: int) -> Any:
        """The checked session of graph ``name`` (:func:`.loading.load_session`)."""
        return load_session(ort, self.folder, self.metadata, name, session_options(ort, threads))

    # ------------------------------------------------------------------------------ vocabulary
    @property
    def embed_dim(self) -> int:
        """``D``."""
        return self.metadata.embed_dim

    def embed_vocabulary(self, names: list[str]) -> np.ndarray:
        """``(N, D)`` unit text embeddings of class names (the model's templates, synonyms)."""
        if self._text is None:
            raise ExportError(
                f"{self.folder}: the baked graph has a fixed vocabulary {self.names}; load the "
                "folder with graph='fp32' to embed other words"
            )
        return embed_class_names(self._text, self.metadata, names, self.folder)

    def set_vocabulary(
        self,
        names: list[str],
        unseen_ids: list[int] | None = None,
        embeddings: np.ndarray | None = None,
    ) -> None:
        """Sets the vocabulary (comma-separated synonyms allowed) and its γ classes.

        Args:
            names: ``N`` class names.
            unseen_ids: indices of ``names`` that receive γ.
            embeddings: ``(N, D)`` precomputed text embeddings (None = embed ``names`` here).

        Raises:
            ValueError: an empty vocabulary, unseen ids outside it, embeddings of another shape
                or not finite.
        """
        names = [str(n) for n in names]
        if not names:
            raise ValueError("the vocabulary is empty: give at least one class name")
        unseen = _mask(len(names), unseen_ids or [])
        if embeddings is None:
            embeddings = self.embed_vocabulary(names)
        else:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.shape != (len(names), self.embed_dim):
                raise ValueError(
                    f"vocabulary embeddings {embeddings.shape} must be ({len(names)}, "
                    f"{self.embed_dim}): {len(names)} names and the graph's D = {self.embed_dim}"
                )
            if not np.isfinite(embeddings).all():
                raise ValueError("vocabulary embeddings hold NaN or infinite values")
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            embeddings = embeddings / np.maximum(norms, 1e-12)
        if self.graph == "baked":
            raise ExportError(f"{self.folder}: the baked graph's vocabulary cannot be changed")
        self._text_embeddings = embeddings
        self.names, self.unseen_mask = names, unseen

    # ---------------------------------------------------------------------------------- graphs
    def encode(self, images: np.ndarray) -> np.ndarray:
        """The image graph on ``(B, 3, H, W)`` float32 RGB 0..255 (no padding, no resize).

        Returns:
            ``(B, D, h, w)`` unit pixel embeddings, or ``(B, N, h, w)`` logits (baked graph).
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        channels = len(self.names) if self.graph == "baked" else self.embed_dim
        name = _IMAGE_FILES[self.graph]
        try:
            out = self._image.run(None, {"image": images})[0]
        except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types
            raise ExportError(
                f"{os.path.join(self.folder, name)}: failed on an input of shape "
                f"{images.shape} ({brief(e)})"
            ) from None
        if out.ndim != 4 or out.shape[:2] != (images.shape[0], channels):
            raise ExportError(
                f"{os.path.join(self.folder, name)}: output shape {out.shape}; expected "
                f"({images.shape[0]}, {channels}, h, w)"
            )
        return out

    def low_res_logits(self, images: np.ndarray) -> np.ndarray:
        """``(B, N, h, w)`` logits ``cos / τ`` of ``(B, 3, H, W)`` float32 images."""
        out = self.encode(images)
        if self.graph == "baked":
            return out
        b, d, h, w = out.shape
        scaled = self._text_embeddings / np.float32(self.metadata.logit_tau)  # (N, D)
        return np.matmul(scaled, out.reshape(b, d, h * w)).reshape(b, -1, h, w)  # (B, N, h, w)

    # ------------------------------------------------------------------------------ prediction
    def logits(self, image: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` unbiased logits of an ``(H, W, 3)`` uint8 RGB image at its own size."""
        image = check_rgb(image)
        short, longest = self.metadata.test_resize
        resized = resize_shortest_edge(image, short, longest)  # (H', W', 3)
        size = resized.shape[:2]
        batch = resized.transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, H', W')
        padded = pad_to_multiple(batch, self.metadata.size_divisibility, self._mean)
        if min(padded.shape[-2:]) < self.metadata.min_input_size:
            raise ValueError(
                f"image: {image.shape[:2]} is too small; the model needs sides >= "
                f"{self.metadata.min_input_size} after the test-time resize"
            )
        out_hw = image.shape[:2]
        if self.mode == "slide":
            full = self._slide(padded)[0]  # (N, Hp, Wp)
            crop = full[:, : size[0], : size[1]]
            return crop if tuple(size) == tuple(out_hw) else bilinear(crop, out_hw)
        low = self.low_res_logits(padded)[0]  # (N, h, w)
        return resize_logits(low, padded.shape[-2:], size, out_hw)

    def _slide(self, images: np.ndarray) -> np.ndarray:
        """Overlap-averaged window logits ``(B, N, H, W)`` (windows upsampled to their size)."""
        (height, width), inference = images.shape[-2:], self.metadata.inference
        (crop_h, crop_w), (step_h, step_w) = inference["slide_crop"], inference["slide_stride"]
        total, count = None, np.zeros((height, width), dtype=np.float32)
        for top in window_starts(height, crop_h, step_h):
            for left in window_starts(width, crop_w, step_w):
                bottom, right = min(top + crop_h, height), min(left + crop_w, width)
                low = self.low_res_logits(images[..., top:bottom, left:right])  # (B, N, h, w)
                up = np.stack([bilinear(x, (bottom - top, right - left)) for x in low])
                if total is None:
                    total = np.zeros((*up.shape[:2], height, width), dtype=np.float32)
                total[..., top:bottom, left:right] += up
                count[top:bottom, left:right] += 1
        return total / count

    def predict(self, image: np.ndarray, gamma: float | None = None) -> Prediction:
        """Label map and per-class scores of an ``(H, W, 3)`` uint8 RGB image.

        Args:
            image: the image.
            gamma: bias of the unseen classes (None = the export's default ``TEST.GAMMA``).
        """
        gamma = self.metadata.gamma if gamma is None else check_gamma(gamma)
        scores = self.logits(image)  # (N, H, W)
        bias = (self.unseen_mask * np.float32(gamma)).astype(np.float32)  # (N,)
        labels = np.argmax(scores + bias[:, None, None], axis=0)  # (H, W), first index on ties
        return Prediction(labels, scores, list(self.names), self.unseen_mask.copy(), gamma)


def _mask(count: int, ids: list[int]) -> np.ndarray:
    """``(count,)`` bool with ``ids`` set; a ValueError naming ids outside ``[0, count)``."""
    bad = [i for i in ids if not 0 <= int(i) < count]
    if bad:
        raise ValueError(f"unseen ids {bad} are outside the vocabulary of {count} names")
    mask = np.zeros(count, dtype=bool)
    mask[list(ids)] = True
    return mask
