"""The export folder's ``metadata.json``: what a runtime needs besides the graphs, and checks.

Plain Python (no torch, no onnxruntime): the exporter writes it, the runtime reads and verifies it.

Layout of an export folder (docs/METHOD.md, 'Export and deploy')::

    metadata.json            this file's content (:class:`ExportMetadata`)
    image_encoder.onnx       RGB (B, 3, H, W) float 0..255 -> unit pixel embeddings (B, D, h, w)
    text_encoder.onnx        token ids (N, L) int64 -> unit text embeddings (N, D)
    image_encoder_int8.onnx  optional: the image graph with int8 dynamic quantisation
    segmenter.onnx           optional: RGB (B, 3, H, W) -> logits (B, N, h, w), vocabulary baked in

``h = ceil(H / 4)``, ``w = ceil(W / 4)`` (the output stride). The runtime pads every image to a
multiple of ``size_divisibility`` with the mean colour (zero after normalisation), as the
detectron2 path does, and resamples the logits once from the padded grid to the output size.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BakedVocabulary",
    "ExportError",
    "ExportMetadata",
    "FORMAT",
    "FORMAT_VERSION",
    "IMAGE_GRAPH",
    "IMAGE_GRAPH_INT8",
    "METADATA_FILE",
    "MODEL_ID_KEY",
    "OPSET",
    "SUPPORTED_OPSETS",
    "TEXT_GRAPH",
    "BAKED_GRAPH",
    "VOCABULARY_KEY",
    "file_sha256",
    "read_graph",
    "read_metadata",
    "resolve_inside",
    "vocabulary_stamp",
]

FORMAT = "chimeraseg-onnx"
# 2: the baked graph carries its vocabulary's stamp; the tokenizer is the built-in CLIP BPE.
FORMAT_VERSION = 2
# The opset every graph is exported with (the TorchScript-based exporter of torch.onnx: the
# dynamo exporter cannot trace the CSH's cached fused value map). The runtime accepts these.
OPSET = 17
SUPPORTED_OPSETS = (17,)
METADATA_FILE = "metadata.json"
IMAGE_GRAPH = "image_encoder.onnx"
IMAGE_GRAPH_INT8 = "image_encoder_int8.onnx"
TEXT_GRAPH = "text_encoder.onnx"
BAKED_GRAPH = "segmenter.onnx"
# Key of the ONNX metadata property that ties every graph to its export's ``model_id``.
MODEL_ID_KEY = "chimeraseg_model_id"
# Key of the property that ties segmenter.onnx to its vocabulary (:func:`vocabulary_stamp`).
VOCABULARY_KEY = "chimeraseg_vocabulary"
MAX_METADATA_BYTES = 8 << 20
MAX_GRAPH_BYTES = 2 << 30  # protobuf's limit; an export never uses external data


class ExportError(ValueError):
    """An export folder, graph or input that the runtime cannot use (the message names it)."""


@dataclass(frozen=True)
class BakedVocabulary:
    """The vocabulary baked into ``segmenter.onnx``.

    Attributes:
        names: ``N`` class names, in the order of the graph's logits.
        unseen_ids: indices of ``names`` that receive γ.
    """

    names: list[str]
    unseen_ids: list[int]


@dataclass(frozen=True)
class ExportMetadata:
    """Everything about an exported model that is not in its graphs.

    Attributes:
        model_id: SHA-256 of ``source`` (config and weights hashes); stored in every graph.
        source: ``{"config_sha256", "weights_sha256", ...}`` of what was exported.
        opset: ONNX opset of the graphs.
        clip: CLIP reference (``name``, ``pretrained``, ``sha256``, ...).
        tokenizer: ``{"library": "open_clip", "model": name or None, "context_length": L}``.
        templates: prompt templates of the text embeddings (``"{}"`` placeholders).
        humanize: class names are humanised before prompting (``"wall-concrete"``).
        logit_tau: temperature ``τ`` of the cosine logits.
        gamma: default bias of the unseen classes' logits.
        train_vocabulary: class names of the training split.
        seen_ids: dataset indices of the seen classes.
        unseen_ids: dataset indices of the unseen classes.
        embed_dim: ``D``.
        pixel_mean: normalisation mean (RGB, 0..255), applied inside the graphs.
        pixel_std: normalisation std.
        output_stride: ``4``: the embeddings are at ``ceil(H / 4) x ceil(W / 4)``.
        size_divisibility: the runtime pads images to a multiple of it (1 = no padding).
        min_input_size: smallest image side the graph accepts (after padding).
        test_resize: ``[short side, max side]`` of the test-time resize (``[0, 0]`` = none).
        inference: ``{"mode", "slide_crop", "slide_stride"}`` of the source config.
        files: graph file name -> SHA-256.
        colors: RGB colour per training class (the dataset's, for the demo; None = none).
        baked: the vocabulary of ``segmenter.onnx`` (None when not exported).
        format: always :data:`FORMAT`.
        format_version: :data:`FORMAT_VERSION`.
    """

    model_id: str
    source: dict[str, Any]
    opset: int
    clip: dict[str, Any]
    tokenizer: dict[str, Any]
    templates: list[str]
    humanize: bool
    logit_tau: float
    gamma: float
    train_vocabulary: list[str]
    seen_ids: list[int]
    unseen_ids: list[int]
    embed_dim: int
    pixel_mean: list[float]
    pixel_std: list[float]
    output_stride: int
    size_divisibility: int
    min_input_size: int
    test_resize: list[int]
    inference: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    colors: list[list[int]] | None = None
    baked: BakedVocabulary | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """Canonical, human-readable JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def vocabulary_stamp(baked: BakedVocabulary) -> str:
    """SHA-256 of a baked vocabulary (names in logit order, unseen ids), stored in its graph."""
    blob = json.dumps([list(baked.names), list(baked.unseen_ids)], ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def resolve_inside(folder: str | os.PathLike, name: str) -> str:
    """The real path of ``<folder>/<name>``, or an ExportError when it leaves the folder.

    Symlinks are resolved (``os.path.realpath``) before the containment check, so a link to a
    file outside the export is refused like a ``../`` name.
    """
    root = os.path.realpath(os.fspath(folder))
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        shown = os.path.join(os.fspath(folder), name)
        raise ExportError(f"{shown}: resolves to {path}, outside the export folder {root}")
    return path


def _load_json(path: str) -> dict[str, Any]:
    folder, name = os.path.split(path)
    real = resolve_inside(folder, name)
    if not os.path.isfile(real):
        raise ExportError(
            f"{path}: missing; '{folder}' is not a ChimeraSeg export (tools/export_onnx.py)"
        )
    if os.path.getsize(real) > MAX_METADATA_BYTES:
        raise ExportError(f"{path}: larger than {MAX_METADATA_BYTES} bytes; not export metadata")
    try:
        with open(real, encoding="utf-8") as f:
            data = json.loads(f.read())
    except RecursionError:  # nested deeper than the parser's recursion limit
        raise ExportError(f"{path}: unreadable export metadata (JSON nested too deep)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: unreadable export metadata ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ExportError(f"{path}: not a ChimeraSeg export metadata file (format != {FORMAT!r})")
    return data


def read_metadata(folder: str | os.PathLike) -> ExportMetadata:
    """Reads and validates ``<folder>/metadata.json`` (every key: :mod:`chimeraseg.deploy.schema`).

    Raises:
        ExportError: one line naming the file and the key or value that is wrong.
    """
    from chimeraseg.deploy.schema import MetadataInvalid, short_repr, validate_metadata  # cycle

    path = os.path.join(os.fspath(folder), METADATA_FILE)
    data = _load_json(path)
    if data.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: format_version {short_repr(data.get('format_version'))}; this runtime reads "
            f"{FORMAT_VERSION} (re-export with tools/export_onnx.py)"
        )
    if data.get("opset") not in SUPPORTED_OPSETS:
        raise ExportError(
            f"{path}: opset {short_repr(data.get('opset'))} is not supported (this runtime: "
            f"{list(SUPPORTED_OPSETS)}); re-export with tools/export_onnx.py"
        )
    try:
        validate_metadata(data)
    except MetadataInvalid as e:
        raise ExportError(f"{path}: {e}") from None
    baked = data.pop("baked")
    return ExportMetadata(**data, baked=None if baked is None else BakedVocabulary(**baked))


def read_graph(folder: str | os.PathLike, meta: ExportMetadata, name: str) -> bytes:
    """The bytes of the graph ``name``, after its checks: listed in the metadata, a regular file
    inside the folder (symlinks resolved), the SHA-256 the metadata records.

    The runtime loads these bytes (never the path again), so the checked file is the one run.

    Raises:
        ExportError: naming the missing, unlisted, outside or changed file.
    """
    path = os.path.join(os.fspath(folder), name)
    if name not in meta.files:
        raise ExportError(f"{path}: not part of this export (metadata.json lists no {name})")
    real = resolve_inside(folder, name)
    if not os.path.isfile(real):
        raise ExportError(f"{path}: missing from the export folder")
    if os.path.getsize(real) > MAX_GRAPH_BYTES:
        raise ExportError(f"{path}: larger than an ONNX model can be ({MAX_GRAPH_BYTES} bytes)")
    with open(real, "rb") as f:
        data = f.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != meta.files[name]:
        raise ExportError(
            f"{path}: SHA-256 {actual[:12]}... differs from metadata.json's "
            f"{meta.files[name][:12]}... (corrupted, or a graph of another export)"
        )
    return data
