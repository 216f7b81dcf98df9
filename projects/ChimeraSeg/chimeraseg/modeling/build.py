"""``build_chimeraseg_model``: the one place that turns settings into a :class:`ChimeraSegModel`.

Used by the detectron2 meta-architecture, the plain-PyTorch synthetic run, the benchmarks, the
tools and the tests, so the parts are always built in the same order (backbone, decoder, CSH,
teacher, criterion: the same random initialisation for a given seed) and wired the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from chimeraseg.clip.teacher import CLIPTeacher, clip_temperature
from chimeraseg.modeling.backbone.build import build_student_backbone, student_decoder_dim
from chimeraseg.modeling.chimeraseg_model import ChimeraSegModel
from chimeraseg.modeling.csh import CLIPSemanticHead
from chimeraseg.modeling.decoder import SegFormerDecoder
from chimeraseg.modeling.losses.criterion import ChimeraSegCriterion
from chimeraseg.modeling.settings import ChimeraSegSettings

__all__ = ["build_chimeraseg_model", "resolve_clip_settings"]


def resolve_clip_settings(
    settings: ChimeraSegSettings, clip_model: nn.Module
) -> ChimeraSegSettings:
    """``settings`` with what follows from the CLIP filled in: SAM's ``tau_c`` when None."""
    sam = settings.losses.sam
    if sam.tau_c is not None:
        return settings
    sam = replace(sam, tau_c=clip_temperature(clip_model))
    return replace(settings, losses=replace(settings.losses, sam=sam))


def build_chimeraseg_model(
    settings: ChimeraSegSettings,
    *,
    clip_model: nn.Module,
    class_text: torch.Tensor,
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
    backbone: nn.Module | None = None,
    decoder: nn.Module | None = None,
) -> ChimeraSegModel:
    """Builds the student, the CSH, the teacher and the criterion of ``settings``.

    Args:
        settings: the whole method (``ChimeraSegSettings()`` = the paper's MiT-B0 model).
        clip_model: the frozen CLIP (the CSH copies its pieces; the teacher runs it).
        class_text: ``(N, D)`` text embeddings of every dataset class.
        seen_ids: dataset indices of the seen classes.
        unseen_ids: dataset indices of the unseen classes.
        backbone: a ready student, ``(B, 3, H, W) -> {"res2": ..., ...}`` with ``out_channels``
            (the detectron2 adapter); None = ``settings.student.backbone``.
        decoder: a ready decoder with ``embed_dim`` = ``E`` (tests); None = SegFormer's.

    Returns:
        The model, on the CPU; without teacher and criterion when ``settings.teacher`` is False.
        Its ``settings`` are ``settings`` resolved for the CLIP (:func:`resolve_clip_settings`).
    """
    settings = resolve_clip_settings(settings, clip_model)
    student = settings.student
    if backbone is None:
        backbone = build_student_backbone(
            student.backbone, student.drop_path_rate, weights=student.weights or None
        )
    if decoder is None:
        width = student_decoder_dim(student.backbone)
        decoder = SegFormerDecoder(dict(backbone.out_channels), width, student.decoder_dropout)
    head = CLIPSemanticHead(decoder.embed_dim, clip_model.visual, settings.head)
    teacher, criterion = None, None
    if settings.teacher:
        teacher = CLIPTeacher(clip_model, dense_path=settings.teacher_dense_path)
        criterion = ChimeraSegCriterion(settings.losses)
    seen_ids, unseen_ids = list(seen_ids), list(unseen_ids)
    return ChimeraSegModel(
        backbone=backbone,
        decoder=decoder,
        head=head,
        teacher=teacher,
        seen_text=class_text[seen_ids],
        unseen_text=class_text[unseen_ids],
        seen_ids=seen_ids,
        unseen_ids=unseen_ids,
        num_classes=class_text.shape[0],
        criterion=criterion,
        settings=settings,
    )
