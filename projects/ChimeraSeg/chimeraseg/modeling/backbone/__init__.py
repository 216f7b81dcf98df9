"""Student backbones (plain PyTorch): MiT-B0...B5 and ViT-B/16 with a simple feature pyramid."""

from chimeraseg.modeling.backbone.build import (
    StudentBackbone,
    build_student_backbone,
    canonical_backbone_name,
    register_student_backbone,
    student_backbone_names,
    student_decoder_dim,
)
from chimeraseg.modeling.backbone.checkpoint import (
    CheckpointError,
    infer_mit_variant,
    load_mit_checkpoint,
    load_vit_checkpoint,
    read_pretrained,
)
from chimeraseg.modeling.backbone.mit import (
    MIT_CONFIGS,
    MixTransformer,
    build_mit,
    get_mit_config,
    mit_decoder_dim,
)
from chimeraseg.modeling.backbone.pretrained import (
    PretrainedNotFoundError,
    mit_state_from_transformers,
    resolve_weights_file,
)
from chimeraseg.modeling.backbone.vit import ViTB16Backbone, build_vit_b16

__all__ = [
    "StudentBackbone",
    "build_student_backbone",
    "canonical_backbone_name",
    "register_student_backbone",
    "student_backbone_names",
    "student_decoder_dim",
    "MIT_CONFIGS",
    "CheckpointError",
    "MixTransformer",
    "ViTB16Backbone",
    "build_mit",
    "build_vit_b16",
    "get_mit_config",
    "infer_mit_variant",
    "load_mit_checkpoint",
    "load_vit_checkpoint",
    "mit_decoder_dim",
    "mit_state_from_transformers",
    "PretrainedNotFoundError",
    "read_pretrained",
    "resolve_weights_file",
]
