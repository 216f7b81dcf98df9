"""Chimera-Seg core modelling: CLIP Semantic Head, pseudo masks, prototypes, losses, model."""

from chimeraseg.modeling.build import build_chimeraseg_model
from chimeraseg.modeling.chimeraseg_model import ChimeraSegModel
from chimeraseg.modeling.csh import CLIPSemanticHead
from chimeraseg.modeling.inference import InferenceConfig, slide_inference, whole_inference
from chimeraseg.modeling.losses import (
    ChimeraSegCriterion,
    SelectiveGlobalDistillation,
    TrainingOutputs,
    register_loss,
    segmentation_loss,
    semantic_alignment_loss,
)
from chimeraseg.modeling.prototypes import (
    ImagePrototypes,
    PrototypeTable,
    class_prototypes,
    downsample_labels,
    prototype_table,
)
from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig, PseudoMasks, generate_pseudo_masks
from chimeraseg.modeling.settings import (
    ChimeraSegSettings,
    HeadSettings,
    LossSettings,
    SAMSettings,
    SegLossSettings,
    SGDSettings,
    StudentSettings,
)

__all__ = [
    "CLIPSemanticHead",
    "ChimeraSegCriterion",
    "ChimeraSegModel",
    "ChimeraSegSettings",
    "HeadSettings",
    "ImagePrototypes",
    "InferenceConfig",
    "LossSettings",
    "PrototypeTable",
    "PseudoMaskConfig",
    "PseudoMasks",
    "SAMSettings",
    "SGDSettings",
    "SegLossSettings",
    "SelectiveGlobalDistillation",
    "StudentSettings",
    "TrainingOutputs",
    "build_chimeraseg_model",
    "class_prototypes",
    "downsample_labels",
    "generate_pseudo_masks",
    "prototype_table",
    "register_loss",
    "segmentation_loss",
    "semantic_alignment_loss",
    "slide_inference",
    "whole_inference",
]
