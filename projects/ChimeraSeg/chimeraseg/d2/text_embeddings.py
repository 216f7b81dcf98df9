"""Text embeddings of a vocabulary on the model's device, encoded once per job (docs/GPU.md,
'Text embeddings').

The frozen teacher shares ``clip_model.visual``, so moving the segmentation model moves only the
vision tower; :func:`encode_vocabulary_once` moves the text tower to the model's device too, lets
rank 0 alone encode the prompts (and write the on-disk cache), and hands its ``(N, D)`` result to
the other ranks over detectron2's CPU (gloo) group. An error on rank 0 reaches every rank.
"""

from __future__ import annotations

import os

import torch
from detectron2.utils import comm
from torch import nn

from chimeraseg.clip.text import encode_class_names

__all__ = ["encode_vocabulary_once"]


def encode_vocabulary_once(
    clip_model: nn.Module,
    names: list[str],
    templates: str | list[str],
    cache_dir: str | os.PathLike | None,
    device: torch.device | str,
) -> torch.Tensor:
    """``(N, D)`` float32 unit text embeddings of ``names`` on ``device``.

    Every rank calls it (as every rank builds the model); rank 0 encodes with its text tower on
    ``device`` (a cache hit reads the file), the others receive rank 0's embeddings.

    Args:
        clip_model: the frozen CLIP (its text tower is moved to ``device``; ``visual`` stays).
        names: ``N`` class names.
        templates: prompt templates (see :func:`~chimeraseg.clip.text.encode_class_names`).
        cache_dir: the text-embedding cache directory, or None.
        device: the model's device.

    Raises:
        RuntimeError: on every rank but 0, carrying rank 0's error when its encoding failed.
    """
    if comm.get_world_size() == 1:
        return encode_class_names(clip_model, names, templates, cache_dir=cache_dir, device=device)
    sent: tuple[str, object] | None = None
    error: BaseException | None = None
    if comm.is_main_process():
        try:
            embeddings = encode_class_names(
                clip_model, names, templates, cache_dir=cache_dir, device=device
            )
            sent = ("embeddings", embeddings.cpu())
        except Exception as e:  # sent to the other ranks, then raised here
            sent, error = ("error", f"{type(e).__name__}: {e}"), e
    kind, payload = comm.all_gather(sent)[0]  # rank 0's entry
    if error is not None:
        raise error
    if kind == "error":
        raise RuntimeError(f"rank 0 could not encode the text embeddings: {payload}")
    return payload.to(device)
