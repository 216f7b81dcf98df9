"""Loading a frozen open_clip CLIP offline-safely, and referencing it from training checkpoints.

``load_clip`` accepts an open_clip pretrained tag (``"openai"``; downloads on first use) or a local
checkpoint file: ``.safetensors``, a ``torch.save``-d state dict (``.pt``/``.pth``/``.bin``, read
with ``weights_only=True``), or OpenAI's original TorchScript archive (``ViT-B-16.pt``, read as
data by :mod:`chimeraseg.clip.torchscript_archive`, never executed; its state dict is loaded into
the open_clip model). ``name`` may be a model-config JSON (the synthetic world's CLIP), and every
load logs which weights it used. Every failure raises an error naming the model, tag or path and
what to do. Random weights need ``allow_random_init=True``
(tests and smoke runs only) and are seeded, so they are reproducible.

QuickGELU: OpenAI's weights were trained with QuickGELU (open_clip names ending in
``-quickgelu``). When the activation of ``name`` does not match the weights (tag ``openai``, an
OpenAI TorchScript archive, or a file whose name contains ``openai``), ``load_clip`` switches to the
matching variant (``ViT-B-16`` -> ``ViT-B-16-quickgelu``) and warns.

Training checkpoints store :func:`clip_reference` (name, tag or path, SHA-256, random-init seed)
instead of CLIP's weights; :func:`verify_clip_reference` checks it when they are loaded
(docs/METHOD.md, 'Inference', checkpoints).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from chimeraseg.clip.cli import DEFAULT_CLIP_NAME
from chimeraseg.clip.torchscript_archive import is_torchscript_archive, read_torchscript_state_dict
from chimeraseg.utils.checkpoint_io import describe_load_error, read_weights_file

__all__ = [
    "load_clip",
    "clip_reference",
    "verify_clip_reference",
    "file_sha256",
    "resolve_model_name",
    "model_config_path",
    "build_untrained_clip",
]

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
REFERENCE_ATTR = "chimeraseg_clip_reference"
# Entries of OpenAI's TorchScript state dict that are not open_clip parameters.
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Returns the hex SHA-256 of a file, read in ``chunk_bytes`` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_path(pretrained: str) -> bool:
    return (
        os.sep in pretrained
        or pretrained.endswith(CHECKPOINT_SUFFIXES)
        or Path(pretrained).exists()
    )


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Reads a checkpoint file; returns ``(state_dict, is_openai_torchscript)``."""
    hint = "re-download or re-export the file (expected a CLIP state dict)"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu"), False
        if is_torchscript_archive(path):
            # OpenAI's archives: tensors only, read without running the archive's code or pickles.
            return read_torchscript_state_dict(path), True
    except Exception as e:  # noqa: BLE001 -- any reader failure means an unreadable file
        raise RuntimeError(
            f"CLIP checkpoint '{path}' is corrupt ({describe_load_error(e)}); {hint}"
        ) from None  # no unsafe advice in the traceback
    # The one weights reader: never torch's "weights_only=False" advice.
    obj = read_weights_file(path, "CLIP checkpoint (weights-only state dict)", hint, RuntimeError)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise RuntimeError(f"CLIP checkpoint '{path}' does not hold a state dict; {hint}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}  # saved from DDP
    return obj, False


def _repository_root() -> Path:
    """The checkout holding ``projects/ChimeraSeg/chimeraseg`` (relative config paths)."""
    return Path(__file__).resolve().parents[4]


def model_config_path(name: str | os.PathLike) -> Path:
    """The absolute path of a model-config JSON: as given, else relative to the repository root.

    Raises:
        FileNotFoundError: naming the path(s) tried when the file does not exist.
    """
    path = Path(name).expanduser()
    candidates = [path] if path.is_absolute() else [path, _repository_root() / path]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        tried = ", ".join(f"'{c}'" for c in candidates)
        raise FileNotFoundError(f"CLIP model-config JSON {tried} does not exist")
    return found.resolve()


def resolve_model_name(name: str) -> str:
    """An open_clip model name; a model-config JSON file is registered under its stem.

    Args:
        name: an open_clip name (``"ViT-B-16-quickgelu"``) or a ``.json`` file in open_clip's
            model-config format (``embed_dim``, ``vision_cfg``, ``text_cfg``), e.g.
            ``configs/clip/chimeraseg-world-vit.json``. A relative path is looked up in the
            working directory, then in the repository root (:func:`model_config_path`).

    Raises:
        FileNotFoundError: naming the JSON path(s) tried when the file does not exist.
    """
    if not str(name).endswith(".json"):
        return str(name)
    found = model_config_path(name)
    if open_clip.get_model_config(found.stem) is None:
        open_clip.add_model_config(found)
    return found.stem


class _DropRandomInitNotice(logging.Filter):
    """Hides open_clip's "initialized randomly" notice: ``load_clip`` logs what it loaded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def _resolve_activation(name: str, needs_quick_gelu: bool, source: str) -> tuple[str, bool]:
    """Returns ``(model name, force_quick_gelu)`` whose activation matches the weights."""
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(
            f"unknown open_clip model name '{name}'; see open_clip.list_models() "
            "(ChimeraSeg uses 'ViT-B-16-quickgelu')"
        )
    has_quick_gelu = bool(config.get("quick_gelu", False))
    if has_quick_gelu == needs_quick_gelu:
        return name, False
    if needs_quick_gelu:
        target, force = f"{name}-quickgelu", False
        if open_clip.get_model_config(target) is None:
            target, force = name, True
    elif name.endswith("-quickgelu"):
        target, force = name[: -len("-quickgelu")], False
    else:
        raise ValueError(f"model '{name}' uses QuickGELU but {source} was trained with GELU")
    warnings.warn(
        f"{source} was trained with {'QuickGELU' if needs_quick_gelu else 'GELU'} but model "
        f"'{name}' uses the other activation; using '{target}'"
        + (" with force_quick_gelu=True" if force else ""),
        UserWarning,
        stacklevel=3,
    )
    return target, force


def _create(name: str, force_quick_gelu: bool) -> nn.Module:
    """An open_clip model with fresh weights (the caller loads or seeds them)."""
    notice_filter = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice_filter)  # open_clip logs the notice through the root logger
    try:
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=force_quick_gelu)
    finally:
        root.removeFilter(notice_filter)


def _load_from_file(name: str, path: Path) -> tuple[nn.Module, str]:
    """Builds ``name`` and loads the file strictly; returns ``(model, resolved name)``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"CLIP checkpoint '{path}' does not exist; pass an existing .pt/.bin/.safetensors file "
            f"for model '{name}' (e.g. OpenAI's ViT-B-16.pt) or an open_clip tag such as 'openai'"
        )
    state_dict, is_openai = _read_state_dict(path)
    if is_openai or "openai" in path.name.lower():
        name, force = _resolve_activation(name, True, f"OpenAI checkpoint '{path}'")
    else:
        name, force = name, False
    model = _create(name, force)
    own = model.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if k in own or k not in _NON_PARAMETER_KEYS}
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise RuntimeError(
            f"CLIP checkpoint '{path}' does not match open_clip model '{name}': {e!s:.600}. "
            "Pass the model name the checkpoint was trained with."
        ) from e
    return model, name


def _load_from_tag(name: str, tag: str) -> tuple[nn.Module, str]:
    """Creates ``name`` with open_clip pretrained tag ``tag`` (may download)."""
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise ValueError(
            f"pretrained='{tag}' is neither an existing checkpoint file nor an open_clip tag of "
            f"model '{name}' (tags: {tags})"
        )
    tag_cfg = open_clip.get_pretrained_cfg(name, tag)
    name, force = _resolve_activation(
        name, bool(tag_cfg.get("quick_gelu", False)), f"pretrained tag '{tag}'"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the activation was checked above
            model = open_clip.create_model(
                name, pretrained=tag, force_quick_gelu=force, require_pretrained=True
            )
    except Exception as e:  # noqa: BLE001 -- download/cache failures come in many types
        raise RuntimeError(
            f"could not load open_clip weights '{name}' / pretrained='{tag}' ({e!s:.300}). "
            "Without internet, download the weights elsewhere (e.g. OpenAI's ViT-B-16.pt) and "
            "pass the local file path as pretrained=...; for tests only, use pretrained=None "
            "with allow_random_init=True"
        ) from e
    return model, name


def build_untrained_clip(name: str, seed: int) -> nn.Module:
    """An open_clip model with open_clip's initialisation under ``seed`` (for training it).

    Args:
        name: open_clip model name or model-config JSON path (:func:`resolve_model_name`).
        seed: Seed of the initial weights; the global RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _create(resolve_model_name(name), False)


def _random_model(name: str, seed: int) -> nn.Module:
    warnings.warn(
        f"CLIP '{name}' uses RANDOM weights (allow_random_init=True, seed {seed}): results are "
        "meaningless except for tests and smoke runs",
        UserWarning,
        stacklevel=3,
    )
    return build_untrained_clip(name, seed)


def load_clip(
    name: str = DEFAULT_CLIP_NAME,
    pretrained: str | os.PathLike | None = "openai",
    allow_random_init: bool = False,
    device: str | torch.device = "cpu",
    random_init_seed: int = 0,
) -> nn.Module:
    """Loads an open_clip CLIP, frozen (``requires_grad=False``) and in eval mode.

    Args:
        name: open_clip model name, e.g. ``"ViT-B-16-quickgelu"``, or a model-config JSON path
            (:func:`resolve_model_name`).
        pretrained: open_clip tag (``"openai"``), local checkpoint path, or None for random weights.
        allow_random_init: Must be True for ``pretrained=None`` (tests only; warns).
        device: Target device.
        random_init_seed: Seed of the random weights (reproducible random CLIP).

    Returns:
        The open_clip ``CLIP``; ``clip_reference(model)`` describes where its weights came from.

    Raises:
        FileNotFoundError: Missing checkpoint path.
        RuntimeError: Unreadable/corrupt/mismatched checkpoint or failed download.
        ValueError: Unknown model name or tag, or random weights without ``allow_random_init``.
    """
    sha256 = None
    name = resolve_model_name(name)
    if pretrained is None or str(pretrained) == "":
        if not allow_random_init:
            raise ValueError(
                f"load_clip(name='{name}', pretrained=None) would use random CLIP weights; pass an "
                "open_clip tag or a checkpoint path (the synthetic world's CLIP: run "
                "tools/train_world_clip.py, it prints the path), or allow_random_init=True "
                "(tests only)"
            )
        if open_clip.get_model_config(name) is None:
            raise ValueError(f"unknown open_clip model name '{name}'; see open_clip.list_models()")
        model, pretrained_ref = _random_model(name, random_init_seed), None
    elif _looks_like_path(str(pretrained)):
        path = Path(pretrained).expanduser()
        model, name = _load_from_file(name, path)
        pretrained_ref, sha256 = str(path.resolve()), file_sha256(path)
    else:
        model, name = _load_from_tag(name, str(pretrained))
        pretrained_ref = str(pretrained)
    model = model.to(device).eval()
    model.requires_grad_(False)
    if pretrained_ref is None:
        source = f"RANDOM weights (seed {random_init_seed})"
    elif sha256 is not None:
        source = f"weights file '{pretrained_ref}' (sha256 {sha256[:12]}...)"
    else:
        source = f"open_clip pretrained tag '{pretrained_ref}'"
    logger.info("CLIP '%s': loaded %s", name, source)
    setattr(
        model,
        REFERENCE_ATTR,
        {
            "name": name,
            "pretrained": pretrained_ref,
            "sha256": sha256,
            "random_init": pretrained_ref is None,
            "random_init_seed": random_init_seed if pretrained_ref is None else None,
        },
    )
    return model


def clip_reference(model: nn.Module) -> dict[str, Any]:
    """Describes a CLIP's weights for training checkpoints (instead of storing them).

    Args:
        model: A CLIP returned by :func:`load_clip`.

    Returns:
        ``{"name", "pretrained" (tag or absolute path, None if random), "sha256" (of the weights
        file, None for a tag or random init), "random_init", "random_init_seed"}``. A model not
        made by ``load_clip`` gives all-None values (unknown provenance).
    """
    ref = getattr(model, REFERENCE_ATTR, None)
    if ref is None:
        keys = ("name", "pretrained", "sha256", "random_init", "random_init_seed")
        return dict.fromkeys(keys)
    return dict(ref)


def verify_clip_reference(model: nn.Module, reference: dict[str, Any], source: str = "") -> None:
    """Checks that ``model`` has the weights a checkpoint's ``reference`` was trained with.

    Args:
        model: The CLIP about to be used.
        reference: ``clip_reference(...)`` stored in the checkpoint.
        source: Checkpoint path for the error message.

    Raises:
        ValueError: Naming every differing key (name, weights checksum, random-init state).
    """
    current = clip_reference(model)
    keys = ["name", "random_init", "random_init_seed"]
    if reference.get("sha256") and current.get("sha256"):
        keys.append("sha256")
    elif not reference.get("random_init"):
        keys.append("pretrained")
    diffs = {
        k: (reference.get(k), current.get(k)) for k in keys if reference.get(k) != current.get(k)
    }
    if diffs:
        where = f" of checkpoint '{source}'" if source else ""
        raise ValueError(
            f"CLIP reference{where} does not match the loaded CLIP: "
            + ", ".join(f"{k}: checkpoint={a!r} vs loaded={b!r}" for k, (a, b) in diffs.items())
        )
