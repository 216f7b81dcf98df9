"""CLIP text embeddings of class names with prompt ensembling and an on-disk cache (paper §III-D).

Decisions: docs/METHOD.md, 'Inference'.

For each class: every comma-separated synonym gets its declared spelling (``clip/names.py``; other
names stay verbatim) and is put into every template; each prompt embedding is L2-normalised, the
prompts of one synonym are averaged and renormalised, then the synonyms are averaged and
renormalised.

The cache file ``<cache_dir>/text_<key>.pt`` is keyed by a SHA-256 of canonical JSON holding the
model name, a weights identifier (the checkpoint file's SHA-256 when known, else a SHA-256 of the
text tower's tensors), the templates, the raw names, the humanise flag and the names as they
fill the templates (so a change of the declared spellings never reuses an old entry).
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from functools import partial
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.clip.loading import clip_reference
from chimeraseg.clip.names import humanize_class_name, split_synonyms
from chimeraseg.clip.templates import resolve_templates

__all__ = ["clip_tokenizer", "encode_class_names", "text_cache_key", "weights_identifier"]

CACHE_FORMAT_VERSION = 1
_TEXT_TOWER_PREFIXES = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
    "text.",
)


def weights_identifier(clip_model: nn.Module) -> str:
    """Identifies the weights behind a CLIP's text embeddings.

    Returns:
        ``"sha256:<file hash>"`` for a model loaded from a file, else ``"text-tower:<hash>"``
        computed from the text tower's parameters and buffers (exact bytes).
    """
    ref = clip_reference(clip_model)
    if ref.get("sha256"):
        return f"sha256:{ref['sha256']}"
    digest = hashlib.sha256()
    for name, tensor in sorted(clip_model.state_dict().items()):
        if name.startswith(_TEXT_TOWER_PREFIXES):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return f"text-tower:{digest.hexdigest()}"


def text_cache_key(
    model_name: str, weights_id: str, templates: list[str], names: list[str], humanize: bool
) -> str:
    """SHA-256 of the canonical JSON of everything the embeddings depend on.

    ``prompt_names`` (the names after :func:`humanize_class_name`) is part of the key: entries
    written while every hyphenated name was rewritten (``"post-it"`` -> ``"it post"``) had no
    such field and can never be hit again.
    """
    payload: dict[str, Any] = {
        "version": CACHE_FORMAT_VERSION,
        "model": model_name,
        "weights": weights_id,
        "templates": list(templates),
        "names": list(names),
        "humanize": humanize,
        "prompt_names": [humanize_class_name(n) if humanize else n for n in names],
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# One tokenizer per CLIP model: looking it up hashes the model's weights (clip_reference), which
# must not happen once per class name (847 names for ADE20K-847).
_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def clip_tokenizer(clip_model: nn.Module):
    """The tokenizer of a CLIP: its open_clip model's, else the default BPE (cached per model)."""
    if clip_model in _TOKENIZERS:
        return _TOKENIZERS[clip_model]
    name = clip_reference(clip_model).get("name")
    if name and open_clip.get_model_config(name) is not None:
        tokenizer = open_clip.get_tokenizer(name)
    else:
        context_length = int(getattr(clip_model, "context_length", 77))
        tokenizer = partial(open_clip.tokenize, context_length=context_length)
    _TOKENIZERS[clip_model] = tokenizer
    return tokenizer


@torch.no_grad()
def _encode_prompts(clip_model: nn.Module, prompts: list[str], batch_size: int) -> torch.Tensor:
    """``(P, D)`` unit-norm embeddings of ``prompts``."""
    tokenize = clip_tokenizer(clip_model)
    device = next(clip_model.parameters()).device
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenize(prompts[start : start + batch_size]).to(device)  # (b, context)
        chunks.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1))
    return torch.cat(chunks)


def _encode_class(
    clip_model: nn.Module, name: str, templates: list[str], humanize: bool, batch_size: int
) -> torch.Tensor:
    """``(D,)`` unit embedding of one class (synonyms averaged)."""
    synonyms = split_synonyms(humanize_class_name(name) if humanize else name)
    per_synonym = []
    for synonym in synonyms:
        prompts = _encode_prompts(clip_model, [t.format(synonym) for t in templates], batch_size)
        per_synonym.append(F.normalize(prompts.mean(dim=0), dim=-1))  # (D,)
    return F.normalize(torch.stack(per_synonym).mean(dim=0), dim=-1)


def _load_cache(path: Path, names: list[str]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        embeddings = payload["embeddings"]
    except Exception as e:  # noqa: BLE001 -- report any unreadable cache entry
        raise RuntimeError(
            f"text-embedding cache file '{path}' is unreadable ({e!s:.200}); delete it to rebuild"
        ) from e
    if payload.get("names") != names or embeddings.shape[0] != len(names):
        raise RuntimeError(f"text-embedding cache file '{path}' does not match its key; delete it")
    return embeddings


def encode_class_names(
    clip_model: nn.Module,
    names: list[str],
    templates: str | list[str] = "imagenet80+scene",
    cache_dir: str | os.PathLike | None = None,
    humanize: bool = True,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Text embeddings of class names (paper §III-D).

    Args:
        clip_model: open_clip ``CLIP`` (frozen; only its text tower is used).
        names: ``N`` class names; commas separate synonyms (``"person, people"``).
        templates: ``"imagenet80+scene"``, ``"zegclip15"``, ``"single"`` or a list of templates.
        cache_dir: Directory of the on-disk cache, or None for no cache.
        humanize: Apply the declared dataset spellings of :func:`humanize_class_name`
            (``"wall-concrete"`` -> ``"concrete wall"``; undeclared names stay verbatim).
        batch_size: Prompts per text-encoder call.
        progress: Show a tqdm progress bar over classes.

    Returns:
        ``(N, D)`` float32 unit rows on the model's device; a cache hit returns identical values.
    """
    if not names:
        raise ValueError("names must not be empty")
    names = [str(n) for n in names]
    template_list = resolve_templates(templates)
    path = None
    if cache_dir is not None:
        model_name = clip_reference(clip_model).get("name") or type(clip_model).__name__
        key = text_cache_key(
            model_name, weights_identifier(clip_model), template_list, names, humanize
        )
        path = Path(cache_dir) / f"text_{key}.pt"
        cached = _load_cache(path, names)
        if cached is not None:
            return cached.to(next(clip_model.parameters()).device)
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="text embeddings", unit="class")
    rows = [_encode_class(clip_model, n, template_list, humanize, batch_size) for n in iterator]
    embeddings = torch.stack(rows)  # (N, D)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(
            {"embeddings": embeddings.cpu(), "names": names, "templates": template_list}, tmp
        )
        os.replace(tmp, path)  # atomic: concurrent readers never see a partial file
    return embeddings
