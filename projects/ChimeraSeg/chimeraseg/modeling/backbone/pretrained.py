"""Where the ImageNet weights of a student come from: a file, a hub-layout folder or a hub id.

``MODEL.CHIMERASEG.BACKBONE.PRETRAINED`` (and ``build_student_backbone(weights=...)``) accepts:

- a weight file (``mit_b4.pth``, a timm ``pytorch_model.bin`` / ``model.safetensors``);
- a local folder in the Hugging Face hub layout, holding ``model.safetensors`` or
  ``pytorch_model.bin`` (and usually ``config.json``), e.g. one written by
  ``hf download nvidia/mit-b4 --local-dir pretrained/mit-b4``;
- a Hugging Face hub id: ``nvidia/mit-b0`` ... ``nvidia/mit-b5`` for MiT, a timm id such as
  ``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`` for ViT-B/16. It is downloaded by
  ``huggingface_hub`` into its cache (``HF_HUB_CACHE``) on first use and read from there
  afterwards, without network. Offline and not cached, one line names the id, the cache folder
  and the manual route (:class:`PretrainedNotFoundError`).

The ``nvidia/mit-b*`` files hold a ``SegformerForImageClassification`` state dict in the key
names of transformers 4 (``segformer.encoder.block.{i}.{j}.attention.self.query.weight`` ...);
:func:`mit_state_from_transformers` renames them to the official SegFormer names of
:class:`~chimeraseg.modeling.backbone.mit.MixTransformer` (``block{i+1}.{j}.attn.q.weight``),
joining the separate key/value projections into ``attn.kv``. timm files already use the key names
of :mod:`chimeraseg.modeling.backbone.vit`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

__all__ = [
    "HUB_WEIGHT_FILES",
    "PretrainedNotFoundError",
    "hub_cache_dir",
    "is_hub_id",
    "mit_state_from_transformers",
    "resolve_weights_file",
]

# The weight files of a hub repository / hub-layout folder, in the order they are tried
# (safetensors first: reading it never runs code).
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# A name ending like this is a file path, never a hub id (``pretrained/mit_b4.pth``).
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pkl", ".pickle")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = {"1", "ON", "YES", "TRUE"}

_HF_PREFIX = "segformer.encoder."
# transformers-4 name inside ``block.{i}.{j}.`` -> SegFormer's name inside ``block{i+1}.{j}.``
_HF_BLOCK_PARTS = {
    "layer_norm_1.": "norm1.",
    "layer_norm_2.": "norm2.",
    "attention.self.query.": "attn.q.",
    "attention.self.sr.": "attn.sr.",
    "attention.self.layer_norm.": "attn.norm.",
    "attention.output.dense.": "attn.proj.",
    "mlp.dense1.": "mlp.fc1.",
    "mlp.dwconv.dwconv.": "mlp.dwconv.dwconv.",
    "mlp.dense2.": "mlp.fc2.",
}
_HF_BLOCK = re.compile(r"^block\.(\d+)\.(\d+)\.(.+)$")
_HF_PATCH = re.compile(r"^patch_embeddings\.(\d+)\.(proj|layer_norm)\.(.+)$")
_HF_NORM = re.compile(r"^layer_norm\.(\d+)\.(.+)$")
_HF_KV_PART = re.compile(r"^attention\.self\.(key|value)\.(weight|bias)$")
_HF_KV = re.compile(r"^(block\d+\.\d+\.attn)\.(key|value)\.(weight|bias)$")


class PretrainedNotFoundError(FileNotFoundError):
    """ImageNet weights that are neither a file, a hub-layout folder nor a reachable hub id."""


def is_hub_id(source: str) -> bool:
    """True for ``owner/name`` that is no existing path and has no weight-file suffix."""
    return (
        bool(_HUB_ID.match(source))
        and not source.lower().endswith(_FILE_SUFFIXES)
        and not os.path.exists(source)
    )


def hub_cache_dir() -> str:
    """The hub cache folder: ``HF_HUB_CACHE`` as set now, else huggingface_hub's default."""
    from huggingface_hub import constants

    folder = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    return os.path.expandvars(os.path.expanduser(folder))


def _hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE or constants.is_offline_mode()


def resolve_weights_file(source: str | os.PathLike) -> str:
    """The local weight file that ``source`` names (downloading a hub id on first use).

    Args:
        source: a file, a folder in the hub layout, or a hub id (module docstring).

    Returns:
        The path of a ``.pth`` / ``.bin`` / ``.safetensors`` file.

    Raises:
        PretrainedNotFoundError: one line naming ``source``: a missing file, a folder without a
            weight file, or a hub id that is neither cached nor downloadable (with the cache
            folder and the manual route).
    """
    text = os.fspath(source)
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        return _folder_weights(path)
    if is_hub_id(text):
        return _hub_weights(text)
    raise PretrainedNotFoundError(
        f"Checkpoint file not found: {text} (ImageNet weights are a file, a folder holding "
        f"{' or '.join(HUB_WEIGHT_FILES)}, or a Hugging Face hub id such as nvidia/mit-b0)"
    )


def _folder_weights(folder: str) -> str:
    """The first of :data:`HUB_WEIGHT_FILES` in ``folder``."""
    for name in HUB_WEIGHT_FILES:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise PretrainedNotFoundError(
        f"Folder {folder} holds no ImageNet weights: expected {' or '.join(HUB_WEIGHT_FILES)} "
        "(the Hugging Face hub layout)"
    )


def _manual_route(repo_id: str) -> str:
    """How to get ``repo_id`` without this process downloading it."""
    folder = f"pretrained/{repo_id.split('/')[-1]}"
    return (
        f"on a connected machine run `hf download {repo_id} --local-dir {folder}`, copy {folder} "
        f"here and set MODEL.CHIMERASEG.BACKBONE.PRETRAINED {folder} (a local file or folder)"
    )


def _hub_weights(repo_id: str) -> str:
    """The cached weight file of ``repo_id``, downloaded first when online and not cached."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    cache = hub_cache_dir()
    for name in HUB_WEIGHT_FILES:
        cached = try_to_load_from_cache(repo_id, name, cache_dir=cache)
        if isinstance(cached, str) and os.path.isfile(cached):
            return cached
    if _hub_offline():
        raise PretrainedNotFoundError(
            f"ImageNet weights {repo_id}: no local file or folder of that name, not in the Hugging "
            f"Face cache {cache}, and the hub is offline (HF_HUB_OFFLINE); {_manual_route(repo_id)}"
        )
    unreachable = False
    for name in HUB_WEIGHT_FILES:
        try:
            return hf_hub_download(repo_id, name, cache_dir=cache)
        except RepositoryNotFoundError as e:
            raise PretrainedNotFoundError(
                f"ImageNet weights {repo_id}: no local file or folder of that name, and the "
                f"Hugging Face hub has no (public) repository of that name ({type(e).__name__})"
            ) from e
        except LocalEntryNotFoundError:  # no connection and not cached
            unreachable = True
        except EntryNotFoundError:  # the repository has no such file: try the next name
            continue
    if unreachable:
        raise PretrainedNotFoundError(
            f"ImageNet weights {repo_id}: no local file or folder of that name, not in the Hugging "
            f"Face cache {cache}, and the hub cannot be reached; {_manual_route(repo_id)}"
        )
    raise PretrainedNotFoundError(
        f"Hugging Face repository {repo_id} has none of {list(HUB_WEIGHT_FILES)}"
    )


def is_transformers_segformer(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict in transformers' SegFormer key names (``segformer.encoder.*``)."""
    return any(k.startswith(_HF_PREFIX) for k in state)


def _rename_hf_key(key: str) -> str:
    """One transformers-4 SegFormer key -> its official SegFormer name (unknown keys kept)."""
    if key.startswith("classifier."):
        return "head." + key[len("classifier.") :]
    if not key.startswith(_HF_PREFIX):
        return key
    rest = key[len(_HF_PREFIX) :]
    if m := _HF_BLOCK.match(rest):
        stage, index, part = int(m.group(1)) + 1, m.group(2), m.group(3)
        for old, new in _HF_BLOCK_PARTS.items():
            if part.startswith(old):
                return f"block{stage}.{index}.{new}{part[len(old) :]}"
        kv = _HF_KV_PART.match(part)
        return f"block{stage}.{index}.attn.{kv.group(1)}.{kv.group(2)}" if kv else key
    if m := _HF_PATCH.match(rest):
        layer = "proj" if m.group(2) == "proj" else "norm"
        return f"patch_embed{int(m.group(1)) + 1}.{layer}.{m.group(3)}"
    if m := _HF_NORM.match(rest):
        return f"norm{int(m.group(1)) + 1}.{m.group(2)}"
    return key


def mit_state_from_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a transformers-4 ``SegformerForImageClassification`` state dict to MiT's keys.

    ``attention.self.key`` and ``.value`` (each ``(C, C)``) are joined into ``attn.kv``
    (``(2C, C)``, key rows first, as SegFormer's ``kv`` linear splits them); ``classifier.*``
    becomes ``head.*`` (dropped by the loader). Keys it does not know keep their name, so the
    strict loader reports them.

    Args:
        state: the hub file's state dict.

    Returns:
        A state dict in :class:`~chimeraseg.modeling.backbone.mit.MixTransformer`'s key names.
    """
    renamed = {_rename_hf_key(k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in renamed.items():
        m = _HF_KV.match(key)
        if m is None:
            out[key] = value
            continue
        prefix, part, kind = m.groups()
        partner = renamed.get(f"{prefix}.value.{kind}")
        if part == "value" and f"{prefix}.key.{kind}" in renamed:
            continue  # joined with its key below
        if part == "key" and partner is not None:
            out[f"{prefix}.kv.{kind}"] = torch.cat([value, partner], dim=0)  # (2C, C) / (2C,)
        else:
            out[key] = value  # a lone key or value: left for the strict loader to name
    return out
