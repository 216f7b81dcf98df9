"""Text embeddings of class names through the exported text graph (prompt ensembling here).

The same rule as :func:`chimeraseg.clip.text.encode_class_names`: each comma-separated synonym
(humanised when the export says so) goes into every template; prompt embeddings are averaged per
synonym and renormalised, then the synonyms are averaged and renormalised.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from chimeraseg.deploy.loading import brief
from chimeraseg.deploy.metadata import METADATA_FILE, TEXT_GRAPH, ExportError, ExportMetadata
from chimeraseg.deploy.tokenizer import build_tokenizer

__all__ = ["embed_class_names"]

PROMPT_BATCH = 256  # prompts per text-graph call


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows (or a vector) divided by their L2 norm."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _run(session: Any, tokens: np.ndarray, meta: ExportMetadata, folder: str) -> np.ndarray:
    """``(b, D)`` unit embeddings of ``(b, L)`` token ids, or an ExportError naming the graph."""
    path = os.path.join(folder, TEXT_GRAPH)
    try:
        out = session.run(None, {"tokens": tokens})[0]
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types
        raise ExportError(f"{path}: failed on tokens {tokens.shape} ({brief(e)})") from None
    if out.shape != (len(tokens), meta.embed_dim):
        raise ExportError(f"{path}: output {out.shape}; expected ({len(tokens)}, {meta.embed_dim})")
    return out


def embed_class_names(
    session: Any, meta: ExportMetadata, names: list[str], folder: str
) -> np.ndarray:
    """``(N, D)`` float32 unit embeddings of ``names`` with the export's templates.

    Args:
        session: onnxruntime session of ``text_encoder.onnx``.
        meta: the export's metadata (templates, tokenizer, humanise flag).
        names: class names; commas separate synonyms.
        folder: the export folder (error messages).

    Raises:
        ValueError: an empty vocabulary or an empty synonym, naming it.
    """
    from chimeraseg.data.spellings import humanize_class_name, split_synonyms

    if not names:
        raise ValueError("the vocabulary is empty: give at least one class name")
    synonyms = [
        split_synonyms(humanize_class_name(n) if meta.humanize else n) for n in map(str, names)
    ]
    prompts = [t.format(s) for group in synonyms for s in group for t in meta.templates]
    tokenize = build_tokenizer(meta.tokenizer, f"{folder}/{METADATA_FILE}")
    chunks = [
        _run(session, tokenize(prompts[start : start + PROMPT_BATCH]), meta, folder)  # (b, D)
        for start in range(0, len(prompts), PROMPT_BATCH)
    ]
    per_prompt = np.concatenate(chunks).reshape(-1, len(meta.templates), meta.embed_dim)
    per_synonym = _unit(per_prompt.mean(axis=1))  # (S, D)
    rows, start = [], 0
    for group in synonyms:
        rows.append(_unit(per_synonym[start : start + len(group)].mean(axis=0)))  # (D,)
        start += len(group)
    return np.stack(rows).astype(np.float32)  # (N, D)
