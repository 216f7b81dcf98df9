"""Chimera-Seg losses: segmentation (CE + focal), Selective Global Distillation, SAM."""

from chimeraseg.modeling.losses.segmentation import segmentation_loss
from chimeraseg.modeling.losses.selective_global_distillation import (
    SelectiveGlobalDistillation,
    round_half_away_from_zero,
)
from chimeraseg.modeling.losses.semantic_alignment import semantic_alignment_loss

__all__ = [
    "SelectiveGlobalDistillation",
    "round_half_away_from_zero",
    "segmentation_loss",
    "semantic_alignment_loss",
]
