"""Chimera-Seg core modelling: CLIP Semantic Head, pseudo masks, prototypes, losses, model."""

from chimeraseg.modeling.chimeraseg_model import ChimeraSegModel
from chimeraseg.modeling.csh import CLIPSemanticHead, fold_projection, folded_cosine_logits
from chimeraseg.modeling.inference import slide_inference, whole_inference
from chimeraseg.modeling.losses import (
    SelectiveGlobalDistillation,
    segmentation_loss,
    semantic_alignment_loss,
)
from chimeraseg.modeling.prototypes import ImagePrototypes, class_prototypes, downsample_labels
from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig, PseudoMasks, generate_pseudo_masks

__all__ = [
    "CLIPSemanticHead",
    "ChimeraSegModel",
    "ImagePrototypes",
    "PseudoMaskConfig",
    "PseudoMasks",
    "SelectiveGlobalDistillation",
    "class_prototypes",
    "downsample_labels",
    "fold_projection",
    "folded_cosine_logits",
    "generate_pseudo_masks",
    "segmentation_loss",
    "semantic_alignment_loss",
    "slide_inference",
    "whole_inference",
]
