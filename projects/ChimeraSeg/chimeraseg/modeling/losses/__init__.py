"""Chimera-Seg losses: the open criterion, the loss registry and the paper's three losses."""

from chimeraseg.modeling.losses.criterion import ChimeraSegCriterion
from chimeraseg.modeling.losses.outputs import TrainingOutputs
from chimeraseg.modeling.losses.registry import build_loss, register_loss, registered_losses
from chimeraseg.modeling.losses.segmentation import SegLoss, segmentation_loss
from chimeraseg.modeling.losses.selective_global_distillation import (
    SelectiveGlobalDistillation,
    SGDLoss,
    round_half_away_from_zero,
)
from chimeraseg.modeling.losses.semantic_alignment import SAMLoss, semantic_alignment_loss

__all__ = [
    "ChimeraSegCriterion",
    "SAMLoss",
    "SGDLoss",
    "SegLoss",
    "SelectiveGlobalDistillation",
    "TrainingOutputs",
    "build_loss",
    "register_loss",
    "registered_losses",
    "round_half_away_from_zero",
    "segmentation_loss",
    "semantic_alignment_loss",
]
