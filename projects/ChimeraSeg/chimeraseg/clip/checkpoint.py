"""Keeping frozen CLIP weights out of training checkpoints (docs/METHOD.md, 'Inference').

A ChimeraSeg model holds CLIP-derived modules (the teacher, the VEncoder, ``visual.proj`` and
``ln_post`` copies). Their frozen parameters are fully determined by the CLIP checkpoint, so a
training checkpoint stores :func:`chimeraseg.clip.loading.clip_reference` (name, tag/path,
SHA-256) plus :func:`trainable_state_dict` (everything except frozen parameters). Loading rebuilds
the model from the referenced CLIP, then applies :func:`load_trainable_state_dict`, which checks
that exactly the frozen parameters are absent.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["frozen_parameter_names", "trainable_state_dict", "load_trainable_state_dict"]


def frozen_parameter_names(module: nn.Module) -> set[str]:
    """Names (as in ``module.state_dict()``) of parameters with ``requires_grad=False``."""
    return {
        name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad
    }


def trainable_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` minus frozen parameters (buffers, e.g. BN statistics, are kept)."""
    frozen = frozen_parameter_names(module)
    return {k: v for k, v in module.state_dict().items() if k not in frozen}


def load_trainable_state_dict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "<state_dict>"
) -> None:
    """Loads a :func:`trainable_state_dict` into a model whose frozen parts are already built.

    Args:
        module: Model rebuilt from the referenced CLIP.
        state_dict: Saved trainable state.
        source: Checkpoint name for error messages.

    Raises:
        KeyError: If keys other than frozen parameters are missing, or unknown keys are present.
    """
    frozen = frozen_parameter_names(module)
    result = module.load_state_dict(dict(state_dict), strict=False)
    missing = sorted(set(result.missing_keys) - frozen)
    if missing or result.unexpected_keys:
        raise KeyError(
            f"checkpoint '{source}' does not match the model: missing trainable keys "
            f"{missing[:20]}, "
            f"unexpected keys {sorted(result.unexpected_keys)[:20]}"
        )
