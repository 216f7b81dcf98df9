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
- ``PRETRAINED``: ImageNet weights loaded strictly at construction: a file (``mit_b*.pth``, a
  timm ViT-B/16 state dict), a folder in the Hugging Face hub layout or a hub id
  (``nvidia/mit-b4``, ``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``); "" = random
  initialisation. A model whose trained weights follow never reads it: :func:`imagenet_init` is
  the one rule (``MODEL.WEIGHTS`` set, or ``--resume`` with a checkpoint in ``OUTPUT_DIR``).
"""

from __future__ import annotations

import os

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

__all__ = [
    "D2MixTransformer",
    "D2ViTB16",
    "imagenet_init",
    "register_d2_student",
    "student_from_config",
    "without_replaced_imagenet_init",
]

# Both backbones accept any input size; padding the batch to a multiple of 32 makes every
# stride-s output exactly (H/s, W/s) instead of ceil(H/s, W/s).
SIZE_DIVISIBILITY = 32

# The tag detectron2's checkpointer writes beside the checkpoints; --resume continues from it.
LAST_CHECKPOINT_TAG = "last_checkpoint"

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


def imagenet_init(cfg: CfgNode, resume: bool = False) -> str:
    """The ImageNet init the student is built with; "" when trained weights replace it.

    The one rule for every tool: ``MODEL.CHIMERASEG.BACKBONE.PRETRAINED`` is read only when no
    trained weights follow the build, i.e. ``MODEL.WEIGHTS`` is empty and not (``resume`` and
    ``OUTPUT_DIR`` holds a checkpoint tag). So ``--eval-only``, the demos, the export and TTA of a
    trained model run with the ImageNet file (or hub id) missing.

    Args:
        cfg: a ChimeraSeg config.
        resume: ``--resume`` was given.

    Returns:
        ``BACKBONE.PRETRAINED``, or "" (random init, overwritten by the trained weights).
    """
    tag = os.path.join(cfg.OUTPUT_DIR, LAST_CHECKPOINT_TAG)
    if cfg.MODEL.WEIGHTS or (resume and os.path.isfile(tag)):
        return ""
    return str(cfg.MODEL.CHIMERASEG.BACKBONE.PRETRAINED)


def without_replaced_imagenet_init(cfg: CfgNode, resume: bool) -> CfgNode:
    """``cfg`` to build the model from when resuming: a frozen copy without ``PRETRAINED`` when
    :func:`imagenet_init` says a checkpoint replaces it (``cfg`` itself otherwise; the config a
    run writes to ``OUTPUT_DIR`` keeps its ``PRETRAINED``)."""
    if imagenet_init(cfg, resume) or not cfg.MODEL.CHIMERASEG.BACKBONE.PRETRAINED:
        return cfg
    copy = cfg.clone()
    copy.defrost()
    copy.MODEL.CHIMERASEG.BACKBONE.PRETRAINED = ""
    copy.freeze()
    return copy


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
            weights=imagenet_init(cfg) or None,
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
