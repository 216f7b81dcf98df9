"""detectron2 ``Backbone`` adapters for the plain-PyTorch student backbones.

Registered names (``cfg.MODEL.BACKBONE.NAME``): ``D2MixTransformer`` (MiT-B0...B5) and ``D2ViTB16``.
Config keys read, all under ``cfg.MODEL.CHIMERASEG.BACKBONE``:

- ``VARIANT``: "b0".."b5" for ``D2MixTransformer``; must be "vit_b16" for ``D2ViTB16``.
- ``DROP_PATH_RATE``: largest stochastic-depth rate (float, 0.1 in the paper's setting).
- ``OUT_FEATURES``: subset of ["res2", "res3", "res4", "res5"] returned by ``forward``.
- ``PRETRAINED``: path of ImageNet weights loaded strictly at construction
  (``mit_b*.pth`` or a timm ViT-B/16 state dict); "" = random initialisation.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from chimeraseg.modeling.backbone import MIT_CONFIGS, build_student_backbone
from chimeraseg.modeling.backbone.build import VIT_B16

# Both backbones accept any input size; padding the batch to a multiple of 32 makes every
# stride-s output exactly (H/s, W/s) instead of ceil(H/s, W/s).
SIZE_DIVISIBILITY = 32


class _StudentBackboneAdapter(Backbone):
    """Wraps a plain student backbone (``out_channels``/``out_strides``/dict forward)."""

    def __init__(self, body: nn.Module, out_features: list[str], input_shape: ShapeSpec) -> None:
        super().__init__()
        if input_shape.channels not in (None, 3):
            raise ValueError(
                f"{type(self).__name__}: expects 3 input channels, got {input_shape.channels}"
            )
        unknown = [f for f in out_features if f not in body.out_channels]
        if unknown or not out_features:
            raise ValueError(
                f"cfg.MODEL.CHIMERASEG.BACKBONE.OUT_FEATURES={list(out_features)}: expected a "
                f"non-empty subset of {list(body.out_channels)}"
            )
        self.body = body
        self._out_features = list(out_features)
        self._out_feature_channels = {f: body.out_channels[f] for f in out_features}
        self._out_feature_strides = {f: body.out_strides[f] for f in out_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps ImageNet-normalised `(B, 3, H, W)` to `{name: (B, C, ceil(H/s), ceil(W/s))}`."""
        features = self.body(x)
        return {name: features[name] for name in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every output feature."""
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return SIZE_DIVISIBILITY


def _weights(cfg: CfgNode) -> str | None:
    """``cfg.MODEL.CHIMERASEG.BACKBONE.PRETRAINED`` or None when empty."""
    return cfg.MODEL.CHIMERASEG.BACKBONE.PRETRAINED or None


@BACKBONE_REGISTRY.register()
class D2MixTransformer(_StudentBackboneAdapter):
    """MiT-B0...B5 (``cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT``) as a detectron2 backbone."""

    def __init__(self, cfg: CfgNode, input_shape: ShapeSpec) -> None:
        bcfg = cfg.MODEL.CHIMERASEG.BACKBONE
        variant = str(bcfg.VARIANT).lower().removeprefix("mit_")
        if variant not in MIT_CONFIGS:
            raise ValueError(
                f"cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT={bcfg.VARIANT!r} is not a MiT variant "
                f"{sorted(MIT_CONFIGS)}; for ViT-B/16 set MODEL.BACKBONE.NAME to 'D2ViTB16'"
            )
        body = build_student_backbone(
            f"mit_{variant}", drop_path_rate=bcfg.DROP_PATH_RATE, weights=_weights(cfg)
        )
        super().__init__(body, list(bcfg.OUT_FEATURES), input_shape)


@BACKBONE_REGISTRY.register()
class D2ViTB16(_StudentBackboneAdapter):
    """ViT-B/16 with a simple feature pyramid as a detectron2 backbone."""

    def __init__(self, cfg: CfgNode, input_shape: ShapeSpec) -> None:
        bcfg = cfg.MODEL.CHIMERASEG.BACKBONE
        if str(bcfg.VARIANT).lower() != VIT_B16:
            raise ValueError(
                f"cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT={bcfg.VARIANT!r} but MODEL.BACKBONE.NAME "
                f"is 'D2ViTB16'; set VARIANT to {VIT_B16!r} (or use 'D2MixTransformer' for MiT)"
            )
        body = build_student_backbone(
            VIT_B16, drop_path_rate=bcfg.DROP_PATH_RATE, weights=_weights(cfg)
        )
        super().__init__(body, list(bcfg.OUT_FEATURES), input_shape)
