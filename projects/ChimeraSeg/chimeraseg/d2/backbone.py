"""detectron2 ``Backbone`` adapters for the plain-PyTorch student backbones.

One name per backbone: ``cfg.MODEL.BACKBONE.NAME`` is a registered student name (``"mit_b0"`` ...
``"mit_b5"``, ``"vit_b16"``, each registered in detectron2's ``BACKBONE_REGISTRY``); the MiT
variant and the decoder width follow from it (:func:`student_from_config`). Older configs name a
family (``D2MixTransformer``, ``D2ViTB16``) plus ``CHIMERASEG.BACKBONE.VARIANT`` and
``CHIMERASEG.DECODER.EMBED_DIM``; they keep loading when those keys agree with the name, and stop
with an error naming both keys when they do not.

Other keys read, all under ``cfg.MODEL.CHIMERASEG.BACKBONE``:

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

from chimeraseg.modeling.backbone import (
    build_student_backbone,
    canonical_backbone_name,
    student_backbone_names,
    student_decoder_dim,
)

__all__ = ["D2MixTransformer", "D2ViTB16", "register_d2_student", "student_from_config"]

# Both backbones accept any input size; padding the batch to a multiple of 32 makes every
# stride-s output exactly (H/s, W/s) instead of ceil(H/s, W/s).
SIZE_DIVISIBILITY = 32

# Family names of earlier configs -> the registered students each can build.
_FAMILIES: dict[str, tuple[str, ...]] = {
    "D2MixTransformer": tuple(n for n in student_backbone_names() if n.startswith("mit_")),
    "D2ViTB16": ("vit_b16",),
}


def student_from_config(cfg: CfgNode) -> str:
    """The registered student of ``MODEL.BACKBONE.NAME``; the one check of the older keys.

    Raises:
        ValueError: naming both keys when ``CHIMERASEG.BACKBONE.VARIANT`` or
            ``CHIMERASEG.DECODER.EMBED_DIM`` (when set) disagree with the name, or the registered
            names when the name is unknown.
    """
    name, variant = str(cfg.MODEL.BACKBONE.NAME), str(cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT)
    if name in _FAMILIES:
        student = _family_member(name, variant)
    else:
        student = canonical_backbone_name(name)
        if variant and canonical_backbone_name(variant) != student:
            raise ValueError(
                f"cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT={variant!r} does not fit "
                f"MODEL.BACKBONE.NAME={name!r}; leave VARIANT unset (the name decides)"
            )
    width, dim = cfg.MODEL.CHIMERASEG.DECODER.EMBED_DIM, student_decoder_dim(student)
    if width and width != dim:
        raise ValueError(
            f"cfg.MODEL.CHIMERASEG.DECODER.EMBED_DIM={width} does not fit MODEL.BACKBONE.NAME="
            f"{name!r} (its decoder width is {dim}); leave EMBED_DIM unset (the name decides)"
        )
    return student


def _family_member(family: str, variant: str) -> str:
    """The student that ``VARIANT`` names inside an older family name."""
    if not variant:
        raise ValueError(
            f"MODEL.BACKBONE.NAME={family!r} names a family; set it to one backbone of "
            f"{list(_FAMILIES[family])}"
        )
    student = canonical_backbone_name(variant)
    if student in _FAMILIES[family]:
        return student
    raise ValueError(
        f"cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT={variant!r} does not fit MODEL.BACKBONE.NAME="
        f"{family!r} (variants {list(_FAMILIES[family])}); set MODEL.BACKBONE.NAME to "
        f"{student!r} and leave VARIANT unset"
    )


class _StudentBackboneAdapter(Backbone):
    """Wraps the plain student backbone the config names (dict forward, detectron2 shapes)."""

    def __init__(self, cfg: CfgNode, input_shape: ShapeSpec) -> None:
        super().__init__()
        if input_shape.channels not in (None, 3):
            raise ValueError(
                f"{type(self).__name__}: expects 3 input channels, got {input_shape.channels}"
            )
        bcfg = cfg.MODEL.CHIMERASEG.BACKBONE
        body = build_student_backbone(
            student_from_config(cfg),
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


class D2MixTransformer(_StudentBackboneAdapter):
    """Older family name: MiT-B0...B5 chosen by ``CHIMERASEG.BACKBONE.VARIANT``."""


class D2ViTB16(_StudentBackboneAdapter):
    """Older family name: ViT-B/16 with a simple feature pyramid."""


def register_d2_student(name: str) -> None:
    """Makes a registered student (``register_student_backbone``) a ``MODEL.BACKBONE.NAME``."""
    BACKBONE_REGISTRY._do_register(canonical_backbone_name(name), _StudentBackboneAdapter)


for _family in (D2MixTransformer, D2ViTB16):
    BACKBONE_REGISTRY.register(_family)
for _name in student_backbone_names():  # one detectron2 name per registered student
    register_d2_student(_name)
