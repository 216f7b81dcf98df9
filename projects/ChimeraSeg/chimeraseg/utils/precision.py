"""Float32 islands: code that must compute in float32 whatever autocast is active around it."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["float32_island"]


def float32_island(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which autocast is off on ``device``'s type (a no-op where it has none).

    Inside it, ops run in their inputs' dtype, so float32 inputs give float32 results: the
    similarities that feed a temperature, a top-K or a threshold, and every sum that accumulates,
    keep float32 under a bf16 / fp16 autocast too (docs/GPU.md, 'Mixed precision and the
    pseudo masks'). Callers cast their inputs with ``.float()`` inside it.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
