"""Loads one graph of an export folder into onnxruntime, after every check that concerns it.

The folder is untrusted input (docs/SECURITY.md, 'Export folders are untrusted input'): the
file must be listed in ``metadata.json``, resolve inside the folder (symlinks included) and have
the recorded SHA-256; its bytes, not its path, go to onnxruntime, so the checked file is the one
that runs and no file beside it is opened. Before loading: its opset is the metadata's, no tensor
keeps data in an external file, and it is quantised exactly when it is the int8 image graph.
After loading: the export's ``model_id`` (and, for ``segmenter.onnx``, the vocabulary stamp) in
its properties, and its inputs and outputs (names, element types, the fixed sizes the metadata
implies).
"""

from __future__ import annotations

import os
from typing import Any

from chimeraseg.deploy.graph_file import QUANTIZED_OPS, GraphFormatError, summarize_graph
from chimeraseg.deploy.metadata import (
    BAKED_GRAPH,
    IMAGE_GRAPH_INT8,
    METADATA_FILE,
    MODEL_ID_KEY,
    TEXT_GRAPH,
    VOCABULARY_KEY,
    ExportError,
    ExportMetadata,
    read_graph,
    vocabulary_stamp,
)
from chimeraseg.utils.cli import one_line

__all__ = ["brief", "load_session"]

_ANY = None  # a dimension the graph keeps dynamic (batch, height, width, prompts)


def brief(error: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (:func:`chimeraseg.utils.cli.one_line`), at most
    ``limit`` characters (onnxruntime's messages can run to pages)."""
    text = one_line(error)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _signature(meta: ExportMetadata, name: str) -> tuple[tuple, tuple]:
    """``((input name, type, shape), (output name, type, shape))`` the graph ``name`` must have."""
    image = ("image", "tensor(float)", (_ANY, 3, _ANY, _ANY))
    if name == TEXT_GRAPH:
        tokens = ("tokens", "tensor(int64)", (_ANY, meta.tokenizer["context_length"]))
        return tokens, ("text_embeddings", "tensor(float)", (_ANY, meta.embed_dim))
    if name == BAKED_GRAPH:
        classes = len(meta.baked.names)
        return image, ("logits", "tensor(float)", (_ANY, classes, _ANY, _ANY))
    return image, ("embeddings", "tensor(float)", (_ANY, meta.embed_dim, _ANY, _ANY))


def _check_bytes(path: str, model: bytes, meta: ExportMetadata, name: str) -> None:
    try:
        summary = summarize_graph(model)
    except GraphFormatError as e:
        raise ExportError(f"{path}: not an ONNX model ({e})") from None
    if summary.opsets.get("") != meta.opset:
        raise ExportError(
            f"{path}: opset {summary.opsets.get('')} differs from {METADATA_FILE}'s {meta.opset}"
        )
    if summary.external_data:
        raise ExportError(
            f"{path}: keeps tensor data in external files, which an export never writes"
        )
    int8 = name == IMAGE_GRAPH_INT8
    if summary.quantized and not int8:
        found = sorted(summary.op_types & QUANTIZED_OPS) or ["int8 weights"]
        raise ExportError(
            f"{path}: a quantised graph ({', '.join(found[:3])}) where {METADATA_FILE} lists "
            "a float32 graph (an int8 graph under the wrong name?)"
        )
    if int8 and not summary.quantized:
        raise ExportError(f"{path}: not quantised, but {METADATA_FILE} lists it as the int8 graph")


def _check_signature(path: str, session: Any, meta: ExportMetadata, name: str) -> None:
    for kind, args, expected in zip(
        ("input", "output"), (session.get_inputs(), session.get_outputs()), _signature(meta, name)
    ):
        actual = [(a.name, a.type, tuple(a.shape)) for a in args]
        want_name, want_type, want_shape = expected
        ok = len(actual) == 1 and actual[0][:2] == (want_name, want_type)
        ok = ok and len(actual[0][2]) == len(want_shape)
        ok = ok and all(w is _ANY or a == w for a, w in zip(actual[0][2], want_shape))
        if not ok:
            shown = ["?" if w is _ANY else w for w in want_shape]
            raise ExportError(
                f"{path}: {kind} {actual} is not {want_name!r} {want_type} {shown} "
                f"(as {METADATA_FILE} implies)"
            )


def _check_properties(path: str, session: Any, meta: ExportMetadata, name: str) -> None:
    properties = session.get_modelmeta().custom_metadata_map
    stamp = properties.get(MODEL_ID_KEY)
    if stamp != meta.model_id:
        raise ExportError(
            f"{path}: graph of model {str(stamp)[:12]}..., but {METADATA_FILE} describes "
            f"{meta.model_id[:12]}... (files from another export)"
        )
    if name == BAKED_GRAPH and properties.get(VOCABULARY_KEY) != vocabulary_stamp(meta.baked):
        raise ExportError(
            f"{path}: its baked vocabulary is not {METADATA_FILE}'s baked names "
            f"{meta.baked.names[:4]}... and unseen ids (changed, or reordered)"
        )


def load_session(ort: Any, folder: str, meta: ExportMetadata, name: str, options: Any) -> Any:
    """An onnxruntime ``InferenceSession`` of the export's graph ``name``, every check passed.

    Args:
        ort: the onnxruntime module.
        folder: the export folder.
        meta: its validated metadata.
        name: the graph file (one of ``meta.files``).
        options: onnxruntime ``SessionOptions``.

    Raises:
        ExportError: one line naming the file and what is wrong with it.
    """
    path = os.path.join(folder, name)
    model = read_graph(folder, meta, name)
    _check_bytes(path, model, meta, name)
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types
        raise ExportError(f"{path}: onnxruntime cannot load the graph ({brief(e)})") from None
    _check_properties(path, session, meta, name)
    _check_signature(path, session, meta, name)
    return session
