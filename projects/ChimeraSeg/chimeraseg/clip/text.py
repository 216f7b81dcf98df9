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
import warnings
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
from chimeraseg.utils.checkpoint_io import CheckpointError, atomic_torch_save, read_weights_file

__all__ = [
    "clip_tokenizer",
    "encode_class_names",
    "move_text_tower",
    "text_cache_key",
    "text_tower_device",
    "weights_identifier",
]

CACHE_FORMAT_VERSION = 1
# Vocabularies at least this large show a progress bar while their text embeddings are encoded.
LARGE_VOCABULARY = 500
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


def text_tower_device(clip_model: nn.Module) -> torch.device:
    """The device of a CLIP's text tower (its parameters outside ``visual``)."""
    for name, param in clip_model.named_parameters():
        if not name.startswith("visual."):
            return param.device
    raise ValueError(f"{type(clip_model).__name__} has no text-tower parameters")


def move_text_tower(clip_model: nn.Module, device: torch.device | str) -> None:
    """Moves every part of a CLIP but ``visual`` to ``device``, in place.

    The visual tower is left where it is: the frozen teacher shares it, so it follows the
    segmentation model, while ``clip_model.to(...)`` would move it too.
    """
    device = torch.device(device)
    for name, child in clip_model.named_children():
        if name != "visual":
            child.to(device)
    # the CLIP's own tensors (positional embedding, projection, attention mask): what
    # ``Module.to`` does, without recursing into the children
    clip_model._apply(lambda t: t.to(device), recurse=False)


@torch.no_grad()
def _encode_prompts(
    clip_model: nn.Module, prompts: list[str], batch_size: int, progress: bool
) -> torch.Tensor:
    """``(P, D)`` unit-norm embeddings of ``prompts``, ``batch_size`` prompts per encoder call."""
    tokenize = clip_tokenizer(clip_model)
    device = text_tower_device(clip_model)
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"text embeddings ({len(prompts)} prompts)", unit="batch")
    chunks = []
    for start in starts:
        tokens = tokenize(prompts[start : start + batch_size]).to(device)  # (b, context)
        chunks.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1))
    return torch.cat(chunks)


def _encode_classes(
    clip_model: nn.Module,
    names: list[str],
    templates: list[str],
    humanize: bool,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """``(N, D)`` unit embeddings: the prompts of all classes go through the encoder in batches.

    Each synonym's prompts are averaged and renormalised, then the synonyms of a class.
    """
    synonyms = [split_synonyms(humanize_class_name(n) if humanize else n) for n in names]
    prompts = [t.format(word) for words in synonyms for word in words for t in templates]
    embeddings = _encode_prompts(clip_model, prompts, batch_size, progress)  # (P, D)
    per_synonym = embeddings.view(-1, len(templates), embeddings.shape[-1])  # (S, T, D)
    per_synonym = F.normalize(per_synonym.mean(dim=1), dim=-1)  # (S, D)
    rows, start = [], 0
    for words in synonyms:
        rows.append(F.normalize(per_synonym[start : start + len(words)].mean(dim=0), dim=-1))
        start += len(words)
    return torch.stack(rows)  # (N, D)


def _embedding_width(clip_model: nn.Module) -> int | None:
    """The width ``D`` of the CLIP's text embeddings, when the model says it."""
    projection = getattr(clip_model, "text_projection", None)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[-1])
    return getattr(projection, "out_features", None)


def _load_cache(path: Path, names: list[str], width: int | None) -> torch.Tensor | None:
    """The cached ``(N, D)`` embeddings at ``path``, None when absent.

    Raises:
        CheckpointError: (a ``RuntimeError``) naming the file and the fix (delete it to
            rebuild) for a file that is unreadable, not a cache of ``names`` or of another
            embedding width.
    """
    if not path.is_file():
        return None
    fix = f"delete '{path}' to rebuild it"
    payload = read_weights_file(path, "text-embedding cache", fix, CheckpointError)
    embeddings = payload.get("embeddings") if isinstance(payload, dict) else None
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        found = type(embeddings).__name__ if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"text-embedding cache file '{path}' holds no (N, D) embedding tensor (found "
            f"{found}); {fix}"
        )
    if payload.get("names") != names or embeddings.shape[0] != len(names):
        raise CheckpointError(
            f"text-embedding cache file '{path}' does not match its key (other class names or "
            f"count: {embeddings.shape[0]} rows for {len(names)} names); {fix}"
        )
    if width is not None and embeddings.shape[1] != width:
        raise CheckpointError(
            f"text-embedding cache file '{path}' holds embeddings of width {embeddings.shape[1]}, "
            f"but this CLIP's text embeddings have width {width}; {fix}"
        )
    return embeddings.float()


def encode_class_names(
    clip_model: nn.Module,
    names: list[str],
    templates: str | list[str] = "imagenet80+scene",
    cache_dir: str | os.PathLike | None = None,
    humanize: bool = True,
    batch_size: int = 256,
    progress: bool | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Text embeddings of class names (paper §III-D).

    Args:
        clip_model: open_clip ``CLIP`` (frozen; only its text tower is used).
        names: ``N`` class names; commas separate synonyms (``"person, people"``).
        templates: ``"imagenet80+scene"``, ``"zegclip15"``, ``"single"`` or a list of templates.
        cache_dir: Directory of the on-disk cache, or None for no cache.
        humanize: Apply the declared dataset spellings of :func:`humanize_class_name`
            (``"wall-concrete"`` -> ``"concrete wall"``; undeclared names stay verbatim).
        batch_size: Prompts per text-encoder call (the prompts of all classes are batched).
        progress: Show a tqdm progress bar over encoder calls; None = only for vocabularies of
            at least ``LARGE_VOCABULARY`` classes.
        device: Where the embeddings are returned and, on a cache miss, the text tower runs:
            it is moved there first (:func:`move_text_tower`; the visual tower stays put).
            None = where the text tower is.

    Returns:
        ``(N, D)`` float32 unit rows on ``device``; a cache hit returns identical values.
    """
    if not names:
        raise ValueError("names must not be empty")
    device = text_tower_device(clip_model) if device is None else torch.device(device)
    names = [str(n) for n in names]
    template_list = resolve_templates(templates)
    path = None
    if cache_dir is not None:
        model_name = clip_reference(clip_model).get("name") or type(clip_model).__name__
        key = text_cache_key(
            model_name, weights_identifier(clip_model), template_list, names, humanize
        )
        path = Path(cache_dir) / f"text_{key}.pt"
        cached = _load_cache(path, names, _embedding_width(clip_model))
        if cached is not None:
            return cached.to(device)
    if text_tower_device(clip_model) != device:
        move_text_tower(clip_model, device)
    if progress is None:
        progress = len(names) >= LARGE_VOCABULARY
    embeddings = _encode_classes(clip_model, names, template_list, humanize, batch_size, progress)
    if path is not None:  # atomic: concurrent readers never see a partial file
        payload = {"embeddings": embeddings.cpu(), "names": names, "templates": template_list}
        try:
            atomic_torch_save(payload, path)
        except OSError as e:  # a read-only cache still serves its entries; this one is not kept
            warnings.warn(f"text-embedding cache '{path}' not written: {e}", stacklevel=2)
    return embeddings
