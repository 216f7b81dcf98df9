"""Loading ImageNet weights into the student backbones, with strict key matching.

MiT (``load_mit_checkpoint``): takes the official SegFormer files ``mit_b0.pth ... mit_b5.pth``,
whose keys are exactly those of :class:`~chimeraseg.modeling.backbone.mit.MixTransformer`
(``patch_embed1.proj.weight``, ``block1.0.attn.q.weight``, ``norm4.bias`` ...) plus the ImageNet
classifier ``head.weight``/``head.bias``; those two keys, and only those, are dropped.

ViT-B/16 (``load_vit_checkpoint``): takes a state dict in timm's ``vit_base_patch16_224`` key format
(``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,
mlp.fc1,mlp.fc2}.*``, ``norm.*``) plus ``head.*`` (dropped). The feature-pyramid keys
(``pyramid.*``) are not in such files and keep their initialisation.

Both take a file, a folder in the Hugging Face hub layout or a hub id (``nvidia/mit-b4``,
``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``; see :mod:`.pretrained`), read ``.safetensors``
or ``torch.load(weights_only=True)`` files, accept a bare state dict or one wrapped as
``{"state_dict": ...}`` or ``{"model": ...}``, and strip a leading ``module.``
(DistributedDataParallel) from every key. MiT files in transformers' SegFormer key names (the
``nvidia/mit-b*`` hub files) are renamed to the official ones. Any other missing, unexpected or
mis-shaped key raises :class:`CheckpointError` naming the file and the keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from chimeraseg.modeling.backbone.layers import resize_pos_embed
from chimeraseg.modeling.backbone.mit import MIT_CONFIGS, MixTransformer
from chimeraseg.modeling.backbone.pretrained import (
    is_transformers_segformer,
    mit_state_from_transformers,
    resolve_weights_file,
)
from chimeraseg.utils.checkpoint_io import read_weights_file

MIT_DROPPED_KEYS = ("head.weight", "head.bias")
VIT_DROPPED_KEYS = ("head.weight", "head.bias")
_MAX_LISTED = 10


class CheckpointError(ValueError):
    """A weight file does not match the model it is loaded into."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a tensor state dict from `path`, unwrapping `state_dict`/`model` and `module.`.

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: The file cannot be read or holds no tensor state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    obj = _read_file(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"Checkpoint {path} holds no state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"Checkpoint {path}: non-tensor entries {_names(bad)}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _read_file(path: str) -> object:
    """The object of a ``.safetensors`` file or of a ``torch.save`` file (``weights_only``)."""
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"Checkpoint {path} is no readable safetensors file: {e}") from e
    advice = "expected ImageNet weights saved with torch.save (e.g. SegFormer's mit_b0.pth)"
    return read_weights_file(path, "backbone checkpoint", advice, error=CheckpointError)


def read_pretrained(source: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Reads ImageNet weights from a file, a hub-layout folder or a hub id (:mod:`.pretrained`).

    Returns:
        The state dict (transformers' SegFormer keys renamed to MiT's) and the file it came from.

    Raises:
        FileNotFoundError: one line naming `source` when it cannot be found or fetched.
        CheckpointError: The file cannot be read or holds no tensor state dict.
    """
    path = resolve_weights_file(source)
    state = read_state_dict(path)
    if is_transformers_segformer(state):
        state = mit_state_from_transformers(state)
    return state, path


def _names(keys: list[str]) -> str:
    """Formats at most `_MAX_LISTED` key names for an error message."""
    keys = sorted(keys)
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def infer_mit_variant(state: Mapping[str, torch.Tensor]) -> str | None:
    """Guesses the MiT variant of a state dict from its stage widths and block counts.

    Returns:
        "b0".."b5", or None when no variant has those widths and depths.
    """
    dims, depths = [], []
    for i in range(1, 5):
        weight = state.get(f"patch_embed{i}.proj.weight")
        if weight is None:
            return None
        dims.append(int(weight.shape[0]))
        pattern = re.compile(rf"^block{i}\.(\d+)\.")
        indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        depths.append(max(indices) + 1 if indices else 0)
    for name, cfg in MIT_CONFIGS.items():
        if tuple(dims) == cfg.embed_dims and tuple(depths) == cfg.depths:
            return name
    return None


def _describe(state: Mapping[str, torch.Tensor]) -> str:
    """Stage widths and depths of a MiT-like state dict, for error messages."""
    dims = [
        tuple(state[f"patch_embed{i}.proj.weight"].shape)[0]
        if f"patch_embed{i}.proj.weight" in state
        else None
        for i in range(1, 5)
    ]
    depths = [
        len({k.split(".")[1] for k in state if k.startswith(f"block{i}.")}) for i in range(1, 5)
    ]
    return f"widths {dims}, depths {depths}"


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    """Raises :class:`CheckpointError` unless `state` has exactly `model`'s keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"Checkpoint {path} does not match {type(model).__name__}: "
            f"missing keys [{_names(missing)}]; unexpected keys [{_names(unexpected)}]"
        )
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if shapes:
        raise CheckpointError(f"Checkpoint {path}: shape mismatch for {'; '.join(shapes[:5])}")


def load_mit_checkpoint(model: MixTransformer, path: str | os.PathLike) -> list[str]:
    """Loads an official `mit_b*.pth` (or a state dict in its key format) strictly into `model`.

    Args:
        model: A MiT built by `build_mit(variant)`.
        path: The weight file, a hub-layout folder or a hub id such as ``nvidia/mit-b0``.

    Returns:
        The keys that were dropped (the ImageNet classifier `head.weight`/`head.bias` if present).

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: Unreadable file, a file of another MiT variant (the message names the
            variant the file looks like), or missing/unexpected/mis-shaped keys (named).
    """
    state, path = read_pretrained(path)
    dropped = [k for k in MIT_DROPPED_KEYS if k in state]
    state = {k: v for k, v in state.items() if k not in MIT_DROPPED_KEYS}
    found = infer_mit_variant(state)
    if found is not None and found != model.variant:
        raise CheckpointError(
            f"Checkpoint {path} looks like mit_{found} ({_describe(state)}), but the model is "
            f"mit_{model.variant}; set the backbone variant to {found!r} or use "
            f"mit_{model.variant}.pth"
        )
    if found is None and "patch_embed1.proj.weight" in state:
        raise CheckpointError(
            f"Checkpoint {path} ({_describe(state)}) matches no MiT variant; the model is "
            f"mit_{model.variant}"
        )
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    return dropped


def load_vit_checkpoint(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Loads a timm `vit_base_patch16_224`-format state dict strictly into the ViT part of `model`.

    Every key of `model.vit.state_dict()` must be in the file and nothing else may be,
    apart from `head.weight`/`head.bias` (dropped). A `pos_embed` of another square grid
    (e.g. a 384-pixel checkpoint) is bicubically resized to the model's pretraining grid.

    Args:
        model: A ViT built by `build_vit_b16(...)`.
        path: The weight file, a hub-layout folder or a timm hub id such as
            ``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``.

    Returns:
        The keys that were dropped.

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: Unreadable file or missing/unexpected/mis-shaped ViT keys (named).
    """
    state, path = read_pretrained(path)
    dropped = [k for k in VIT_DROPPED_KEYS if k in state]
    state = {k: v for k, v in state.items() if k not in VIT_DROPPED_KEYS}
    vit_part = model.vit
    if "pos_embed" in state and state["pos_embed"].shape != vit_part.pos_embed.shape:
        side = int(round((vit_part.pos_embed.shape[1] - 1) ** 0.5))
        try:
            state["pos_embed"] = resize_pos_embed(state["pos_embed"], (side, side))
        except ValueError as e:
            raise CheckpointError(f"Checkpoint {path}: {e}") from e
    check_state_dict(vit_part, state, path)
    vit_part.load_state_dict(state, strict=True)
    return dropped
