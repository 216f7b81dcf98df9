"""The student backbones by name: one registry entry per backbone, its decoder width with it.

A registered name (``"mit_b0"`` ... ``"mit_b5"``, ``"vit_b16"``) is all a config gives: the
builder, the ImageNet-checkpoint loader and the SegFormer decoder width ``E`` follow from it
(docs/EXTENDING.md, 'Add a backbone'). Aliases such as ``"b4"``, ``"MIT_B4"`` or ``"vit-b/16"``
are accepted by :func:`canonical_backbone_name`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from chimeraseg.modeling.backbone.checkpoint import load_mit_checkpoint, load_vit_checkpoint
from chimeraseg.modeling.backbone.mit import MIT_CONFIGS, build_mit, mit_decoder_dim
from chimeraseg.modeling.backbone.vit import build_vit_b16

__all__ = [
    "StudentBackbone",
    "build_student_backbone",
    "canonical_backbone_name",
    "register_student_backbone",
    "student_backbone_names",
    "student_decoder_dim",
]

VIT_B16 = "vit_b16"


@dataclass(frozen=True)
class StudentBackbone:
    """One registered student.

    Attributes:
        build: ``drop_path_rate -> module`` with ``out_channels``, ``out_strides`` and
            ``forward((B, 3, H, W)) -> {"res2": ..., ...}``.
        load_weights: ``(module, source)``: loads ImageNet weights (file, hub-layout folder or
            hub id) strictly.
        decoder_dim: the SegFormer decoder width ``E`` used with it.
    """

    build: Callable[[float], nn.Module]
    load_weights: Callable[[nn.Module, str | os.PathLike], object]
    decoder_dim: int


_STUDENTS: dict[str, StudentBackbone] = {}


def register_student_backbone(name: str, student: StudentBackbone) -> None:
    """Registers ``student`` under the lower-case ``name``.

    Raises:
        ValueError: when ``name`` is not lower case or is registered already.
    """
    if name != name.lower() or name in _STUDENTS:
        raise ValueError(f"register_student_backbone: {name!r} is not lower case or is taken")
    _STUDENTS[name] = student


for _variant in MIT_CONFIGS:
    register_student_backbone(
        f"mit_{_variant}",
        StudentBackbone(
            build=partial(build_mit, _variant),
            load_weights=load_mit_checkpoint,
            decoder_dim=mit_decoder_dim(_variant),
        ),
    )
register_student_backbone(
    VIT_B16,
    StudentBackbone(
        build=lambda drop_path_rate: build_vit_b16(drop_path_rate=drop_path_rate),
        load_weights=load_vit_checkpoint,
        decoder_dim=768,
    ),
)


def student_backbone_names() -> tuple[str, ...]:
    """Every registered student name, in registration order."""
    return tuple(_STUDENTS)


def canonical_backbone_name(name: str) -> str:
    """Maps "b4"/"mit_b4"/"MIT_B4" to "mit_b4" and "vit_b16"/"vit-b/16" to "vit_b16".

    Raises:
        ValueError: naming the unknown name and the registered ones.
    """
    key = name.lower().replace("-", "_").replace("/", "")
    key = f"mit_{key}" if key.startswith("b") and f"mit_{key}" in _STUDENTS else key
    if key not in _STUDENTS:
        raise ValueError(f"Unknown student backbone {name!r}; expected one of {list(_STUDENTS)}")
    return key


def student_decoder_dim(name: str) -> int:
    """Decoder width E of a backbone: 256 for MiT-B0/B1, 768 for MiT-B2..B5 and ViT-B/16."""
    return _STUDENTS[canonical_backbone_name(name)].decoder_dim


def build_student_backbone(
    name: str, drop_path_rate: float, weights: str | os.PathLike | None = None
) -> nn.Module:
    """Builds a registered student backbone and optionally loads ImageNet weights strictly.

    Args:
        name: a registered name or alias (:func:`canonical_backbone_name`).
        drop_path_rate: Largest stochastic-depth rate.
        weights: Optional ImageNet weights: a file (official ``mit_b*.pth``, a timm ViT-B/16
            state dict), a folder in the Hugging Face hub layout, or a hub id (``nvidia/mit-b0``,
            ``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``; see
            :mod:`chimeraseg.modeling.backbone.pretrained`).

    Returns:
        A module with ``out_channels``, ``out_strides`` and
        ``forward((B, 3, H, W)) -> {"res2".."res5"}``.
    """
    student = _STUDENTS[canonical_backbone_name(name)]
    model = student.build(drop_path_rate)
    if weights:
        student.load_weights(model, weights)
    return model
