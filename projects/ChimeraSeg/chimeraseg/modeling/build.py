"""``build_chimeraseg_model``: the one place that assembles a :class:`ChimeraSegModel`.

Used by the detectron2 meta-architecture, the plain-PyTorch synthetic run, the benchmark and the
tests, so the parts are always built in the same order (decoder, CSH, teacher: the same random
initialisation for a given seed) and wired the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from chimeraseg.clip.teacher import CLIPTeacher
from chimeraseg.modeling.chimeraseg_model import ChimeraSegModel
from chimeraseg.modeling.csh import CLIPSemanticHead
from chimeraseg.modeling.decoder import SegFormerDecoder
from chimeraseg.modeling.losses.criterion import ChimeraSegCriterion
from chimeraseg.modeling.losses.selective_global_distillation import SelectiveGlobalDistillation

__all__ = ["build_chimeraseg_model"]


def build_chimeraseg_model(
    *,
    clip_model: nn.Module,
    backbone: nn.Module,
    class_text: torch.Tensor,
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
    decoder_dim: int,
    decoder: nn.Module | None = None,
    decoder_dropout: float = 0.1,
    head_options: Mapping[str, Any] | None = None,
    with_teacher: bool = True,
    teacher_dense_path: str = "value_ffn",
    criterion: ChimeraSegCriterion | None = None,
    **model_options: Any,
) -> ChimeraSegModel:
    """Builds the student decoder, the CSH and the teacher around ``backbone`` and ``clip_model``.

    Args:
        clip_model: the frozen CLIP (the CSH copies its pieces; the teacher runs it).
        backbone: the student, ``(B, 3, H, W) -> {"res2": ..., ...}`` with ``out_channels``.
        class_text: ``(N, D)`` text embeddings of every dataset class.
        seen_ids: dataset indices of the seen classes.
        unseen_ids: dataset indices of the unseen classes.
        decoder_dim: ``E``, the decoder's output width (the CSH's input).
        decoder: a ready decoder (then ``decoder_dim`` is its width); None = SegFormer's.
        decoder_dropout: dropout of the SegFormer decoder.
        head_options: keyword arguments of :class:`CLIPSemanticHead` (Tables IV-IX).
        with_teacher: build the CLIP teacher (training, similarity maps) or not (inference).
        teacher_dense_path: dense-feature path of the teacher (see ``CLIPTeacher``).
        criterion: the losses; None = the paper's weights when a teacher is built, else none.
        **model_options: the remaining keywords of :class:`ChimeraSegModel` (``setting``,
            ``pseudo_masks``, ``logit_tau``, ``pixel_mean``, ``pixel_std``, ``inference``).

    Returns:
        The model, on the CPU.
    """
    if decoder is None:
        decoder = SegFormerDecoder(dict(backbone.out_channels), decoder_dim, decoder_dropout)
    head = CLIPSemanticHead(decoder_dim, clip_model.visual, **dict(head_options or {}))
    teacher = CLIPTeacher(clip_model, dense_path=teacher_dense_path) if with_teacher else None
    if criterion is None and with_teacher:
        criterion = ChimeraSegCriterion(global_distillation=SelectiveGlobalDistillation())
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
        **model_options,
    )
