"""Checkpoint files: atomic writes and reads that never run code (plain PyTorch).

Writes go through :func:`chimeraseg.utils.output_files.atomic_open` (re-exported here): a new
temporary file in the target's directory, flushed and fsync-ed, then renamed over the target
(``os.replace``, atomic on POSIX), and the directory fsync-ed: a kill leaves either the previous
file or the complete new one, never a truncated file under the final name.

Reads use ``torch.load(weights_only=True)`` only. Python pickles (``.pkl``) are refused by name:
unpickling them can run arbitrary code, and ChimeraSeg never writes them. A file that is not a
checkpoint raises :class:`CheckpointError` naming it; the message never suggests unsafe loading.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from chimeraseg.utils.output_files import atomic_open, atomic_write_text, umask_file_mode
from chimeraseg.utils.output_files import fsync_directory as _fsync_directory  # noqa: F401

__all__ = [
    "REFUSED_SUFFIXES",
    "CheckpointError",
    "atomic_open",
    "atomic_torch_save",
    "atomic_write_text",
    "describe_load_error",
    "load_checkpoint_file",
    "read_weights_file",
    "resume_candidates",
    "umask_file_mode",
]

# Pickle-based formats that detectron2 would read with ``pickle.load``.
REFUSED_SUFFIXES = (".pkl", ".pickle")


class CheckpointError(RuntimeError):
    """A checkpoint file is refused or cannot be read; the message names the file."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_open`."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def describe_load_error(error: BaseException) -> str:
    """A one-line reason why ``torch.load(..., weights_only=True)`` failed.

    torch's own messages advise re-running with ``weights_only=False`` (which runs code from the
    file); they are replaced by a neutral description.
    """
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and "global" in text.lower():
        return (
            "it holds Python objects other than tensors and plain containers (refused: loading "
            "them could run code from the file)"
        )
    if isinstance(error, (EOFError, zipfile.BadZipFile)) or "zip archive" in text:
        return "it is empty, truncated or a corrupt zip archive"
    not_a_checkpoint = "it is neither a torch.save archive nor a legacy torch checkpoint"
    if isinstance(error, pickle.UnpicklingError):
        return not_a_checkpoint
    # Other bytes fail deeper in the legacy reader (IndexError, KeyError, UnicodeDecodeError...).
    first = (text.splitlines() or [""])[0]
    if "weights_only" in first or "eights only" in first:
        first = ""
    detail = f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__
    return f"{not_a_checkpoint} ({detail})"


def read_weights_file(
    path: str | os.PathLike,
    what: str,
    advice: str,
    error: type[Exception] = CheckpointError,
) -> Any:
    """The one reader of every weights file ChimeraSeg loads: ``torch.load(weights_only=True)``.

    Checkpoints, backbone and CLIP weights, text-embedding caches and world-CLIP caches all come
    through here, so that each failure reads the same way: the file, what it was for, a neutral
    reason (:func:`describe_load_error`) and ``advice``; never torch's suggestion to load unsafely,
    neither in the message nor in a chained traceback.

    Args:
        path: the file (``.pkl`` / ``.pickle`` are refused by name).
        what: what the file should be, a noun phrase that reads after "is not a", e.g.
            ``"backbone checkpoint (MODEL.CHIMERASEG.BACKBONE.PRETRAINED)"``.
        advice: what to do about an unreadable file, e.g. ``"delete it to rebuild"``.
        error: the exception type to raise (a subclass of Exception taking one message).

    Returns:
        The loaded object (tensors and plain containers only), on the CPU.

    Raises:
        error: naming ``what`` and ``path``: a pickle suffix, a missing file, unreadable bytes.
    """
    path = os.fspath(path)
    if path.lower().endswith(REFUSED_SUFFIXES):
        raise error(
            f"refusing to load '{path}' ({what}): Python pickle files can run arbitrary code when "
            "loaded, and ChimeraSeg never writes them (its weights are .pth / .pt files)"
        )
    if not os.path.isfile(path):
        raise error(f"{what} file '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- every reader failure means "not a weights file"
        raise error(f"'{path}' is not a {what}: {describe_load_error(e)}; {advice}") from None


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Args:
        path: a ``torch.save``-d dict (``.pth``, ``.pt``); pickles (``.pkl``) are refused.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: naming the file: a refused pickle, a missing file, a file that is not a
            checkpoint, or one that does not hold a dict.
    """
    advice = "expected a .pth file written by ChimeraSeg / torch.save"
    obj = read_weights_file(path, "checkpoint", advice)
    if not isinstance(obj, dict):
        raise CheckpointError(f"'{path}' is not a checkpoint: it holds a {type(obj).__name__}")
    return obj


def resume_candidates(save_dir: str, latest: str, suffixes: Sequence[str] = (".pth",)) -> list[str]:
    """Checkpoints to try when resuming: ``latest`` first, then the others, newest first.

    Args:
        save_dir: directory holding the checkpoints.
        latest: the file the ``last_checkpoint`` tag names (tried first, even if missing).
        suffixes: checkpoint file suffixes.

    Returns:
        Paths; the fallbacks are ordered by modification time, newest first.
    """
    others = [
        str(p)
        for p in Path(save_dir).iterdir()
        if p.is_file() and p.suffix in suffixes and not p.name.startswith(".")
    ]
    others = [p for p in others if os.path.abspath(p) != os.path.abspath(latest)]
    others.sort(key=lambda p: (os.path.getmtime(p), p), reverse=True)
    return [latest, *others]
