"""One entry point for the student backbones by name, with optional ImageNet weights."""

from __future__ import annotations

import os

from torch import nn

from chimeraseg.modeling.backbone.checkpoint import load_mit_checkpoint, load_vit_checkpoint
from chimeraseg.modeling.backbone.mit import MIT_CONFIGS, build_mit, mit_decoder_dim
from chimeraseg.modeling.backbone.vit import build_vit_b16

VIT_B16 = "vit_b16"
BACKBONE_NAMES = tuple(f"mit_{v}" for v in MIT_CONFIGS) + (VIT_B16,)
VIT_DECODER_DIM = 768


def canonical_backbone_name(name: str) -> str:
    """Maps "b4"/"mit_b4"/"MIT_B4" to "mit_b4" and "vit_b16"/"vit-b/16" to "vit_b16"."""
    key = name.lower().replace("-", "_").replace("/", "")
    key = key if not key.startswith("b") else f"mit_{key}"
    if key not in BACKBONE_NAMES:
        raise ValueError(f"Unknown student backbone {name!r}; expected one of {BACKBONE_NAMES}")
    return key


def student_decoder_dim(name: str) -> int:
    """Decoder width E for a backbone name: 256 for MiT-B0/B1, 768 for MiT-B2..B5 and ViT-B/16."""
    key = canonical_backbone_name(name)
    return VIT_DECODER_DIM if key == VIT_B16 else mit_decoder_dim(key)


def build_student_backbone(
    name: str, drop_path_rate: float = 0.1, weights: str | os.PathLike | None = None
) -> nn.Module:
    """Builds a student backbone and optionally loads ImageNet weights strictly.

    Args:
        name: "mit_b0".."mit_b5" (or "b0".."b5") or "vit_b16".
        drop_path_rate: Largest stochastic-depth rate.
        weights: Optional path of an official `mit_b*.pth` or a timm ViT-B/16 state dict.

    Returns:
        A module with `out_channels`, `out_strides` and `forward((B, 3, H, W)) -> {"res2".."res5"}`.
    """
    key = canonical_backbone_name(name)
    if key == VIT_B16:
        model = build_vit_b16(drop_path_rate=drop_path_rate)
        if weights:
            load_vit_checkpoint(model, weights)
        return model
    model = build_mit(key, drop_path_rate=drop_path_rate)
    if weights:
        load_mit_checkpoint(model, weights)
    return model
