"""The training criterion: every loss with a non-zero weight, weighted (METHOD.md, 'Total loss').

``L = Σ_name w_name · L_name`` over the weights of
:class:`~chimeraseg.modeling.settings.LossSettings` (the paper's ``loss_seg``, ``loss_sgd``,
``loss_sam`` by default). Each loss is looked up by name in the loss registry
(:func:`~chimeraseg.modeling.losses.registry.register_loss`) and built from the same settings; a
loss with weight 0 is not built and not computed, and is reported as an exact 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

# The paper's losses register themselves when their modules are imported.
from chimeraseg.modeling.losses import (  # noqa: F401
    segmentation,
    selective_global_distillation,
    semantic_alignment,  # noqa: F401
)
from chimeraseg.modeling.losses.outputs import TrainingOutputs
from chimeraseg.modeling.losses.registry import build_loss

if TYPE_CHECKING:
    from chimeraseg.modeling.settings import LossSettings

__all__ = ["ChimeraSegCriterion", "TrainingOutputs"]


class ChimeraSegCriterion(nn.Module):
    """The weighted losses (Mask2Former's ``SetCriterion`` pattern, open to registered losses).

    Args:
        settings: the loss weights (``weight_dict``) and every loss's own settings.

    Raises:
        ValueError: on a weight whose loss is not registered (naming it and the registered ones).
    """

    def __init__(self, settings: LossSettings) -> None:
        super().__init__()
        self.settings = settings
        self.weight_dict = dict(settings.weights)
        built = {name: build_loss(name, settings) for name, w in self.weight_dict.items() if w}
        self.losses = nn.ModuleDict(built)

    def forward(self, outputs: TrainingOutputs, iteration: int) -> dict[str, torch.Tensor]:
        """Weighted losses ``{name: w·L}`` in the order of the weights (their sum is ``L``).

        Args:
            outputs: the model's features of the batch.
            iteration: training iteration (K schedule of SGD).
        """
        zero = outputs.features.new_zeros((), dtype=torch.float32)
        return {
            name: weight * self.losses[name](outputs, iteration) if name in self.losses else zero
            for name, weight in self.weight_dict.items()
        }
