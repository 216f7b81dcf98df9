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

from chimeraseg.modeling.backbone import MIT_CONFIGS, build_student_backbone
from chimeraseg.modeling.backbone.build import VIT_B16

# Both backbones accept any input size; padding the batch to a multiple of 32 makes every
# stride-s output exactly (H/s, W/s) instead of ceil(H/s, W/s).
SIZE_DIVISIBILITY = 32


# MODEL.BACKBONE.NAME -> the student names (CHIMERASEG.BACKBONE.VARIANT) it can build.
_STUDENTS: dict[str, tuple[str, ...]] = {
    "D2MixTransformer": tuple(f"mit_{v}" for v in MIT_CONFIGS),
    "D2ViTB16": (VIT_B16,),
}


def student_name(cfg: CfgNode, registered_name: str) -> str:
    """The student of ``VARIANT``; the one check that it fits ``MODEL.BACKBONE.NAME``.

    Raises:
        ValueError: naming both keys and the name that would fit.
    """
    variant = str(cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT)
    key = variant.lower()
    name = key if key == VIT_B16 else f"mit_{key.removeprefix('mit_')}"
    if name in _STUDENTS[registered_name]:
        return name
    fitting = [n for n, students in _STUDENTS.items() if name in students]
    advice = f"set MODEL.BACKBONE.NAME to {fitting[0]!r}" if fitting else "no backbone builds it"
    raise ValueError(
        f"cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT={variant!r} does not fit MODEL.BACKBONE.NAME="
        f"{registered_name!r} (variants {list(_STUDENTS[registered_name])}); {advice}"
    )


class _StudentBackboneAdapter(Backbone):
    """Wraps the plain student backbone that ``VARIANT`` names (dict forward, detectron2 shapes)."""

    def __init__(self, cfg: CfgNode, input_shape: ShapeSpec) -> None:
        super().__init__()
        if input_shape.channels not in (None, 3):
            raise ValueError(
                f"{type(self).__name__}: expects 3 input channels, got {input_shape.channels}"
            )
        bcfg = cfg.MODEL.CHIMERASEG.BACKBONE
        body = build_student_backbone(
            student_name(cfg, type(self).__name__),
            drop_path_rate=bcfg.DROP_PATH_RATE,
            weights=bcfg.PRETRAINED or None,
        )
        out_features = list(bcfg.OUT_FEATURES)
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
    def out_channels(self) -> dict[str, int]:
        """Channels of every output feature (what the decoder is built for)."""
        return dict(self._out_feature_channels)

    @property
    def size_divisibility(self) -> int:
        return SIZE_DIVISIBILITY


@BACKBONE_REGISTRY.register()
class D2MixTransformer(_StudentBackboneAdapter):
    """MiT-B0...B5 (``cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT``) as a detectron2 backbone."""


@BACKBONE_REGISTRY.register()
class D2ViTB16(_StudentBackboneAdapter):
    """ViT-B/16 with a simple feature pyramid as a detectron2 backbone."""
