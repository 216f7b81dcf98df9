"""Chimera-Seg losses: the criterion and its three terms (segmentation, SGD, SAM)."""

from chimeraseg.modeling.losses.criterion import (
    LOSS_NAMES,
    PAPER_LOSS_WEIGHTS,
    ChimeraSegCriterion,
    TrainingOutputs,
)
from chimeraseg.modeling.losses.segmentation import segmentation_loss
from chimeraseg.modeling.losses.selective_global_distillation import (
    SelectiveGlobalDistillation,
    round_half_away_from_zero,
)
from chimeraseg.modeling.losses.semantic_alignment import semantic_alignment_loss

__all__ = [
    "LOSS_NAMES",
    "PAPER_LOSS_WEIGHTS",
    "ChimeraSegCriterion",
    "SelectiveGlobalDistillation",
    "TrainingOutputs",
    "round_half_away_from_zero",
    "segmentation_loss",
    "semantic_alignment_loss",
]
