"""The package's ``ChimeraSegModel`` for the benchmark, with its inference split into stages.

Whole-model inference is the core's own path, ``ChimeraSegModel.forward_test`` (whole image,
logits upsampled once). The stage methods re-use the same modules so each stage can be timed on
its own input:

    images (B, 3, H, W) 0..255 -> ImageNet normalisation -> backbone -> decoder F (B, E, h, w)
    -> tokens (B, h, w, E) -> MLP Fp (B, h, w, Dv) -> VEncoder Fv -> Norm + residual Fres
    -> projection Fc (B, h, w, D) -> cosine vs text / tau (B, N, h, w) -> bilinear (B, N, H, W)
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.clip_setup import Vocabulary
from chimeraseg.modeling import (
    ChimeraSegModel,
    ChimeraSegSettings,
    InferenceConfig,
    LossSettings,
    StudentSettings,
    build_chimeraseg_model,
)


def build_model(
    backbone_name: str, clip_model: nn.Module, vocab: Vocabulary, with_teacher: bool
) -> ChimeraSegModel:
    """The paper-default model for one student backbone, random student weights.

    Paper defaults: docs/METHOD.md, 'Training graph'.

    Args:
        backbone_name: ``"mit_b0"``, ``"mit_b4"``, ``"vit_b16"``, ...
        clip_model: open_clip CLIP the head copies from (and the teacher uses).
        vocab: class names, split and ``(N, D)`` text embeddings.
        with_teacher: attach a :class:`CLIPTeacher` (training) or not (inference only).
    """
    settings = ChimeraSegSettings(
        student=StudentSettings(backbone=backbone_name),
        losses=LossSettings(gather=False, seed=0),
        teacher=with_teacher,
    )
    return build_chimeraseg_model(
        settings,
        clip_model=clip_model,
        class_text=vocab.text,
        seen_ids=vocab.seen,
        unseen_ids=vocab.unseen,
    )


class StudentPipeline(nn.Module):
    """Inference of one :class:`ChimeraSegModel`, plus stage methods for timing.

    Args:
        backbone_name: Student backbone name.
        clip_model: open_clip CLIP.
        vocab: The evaluation vocabulary (all ``N`` classes compete).
    """

    def __init__(self, backbone_name: str, clip_model: nn.Module, vocab: Vocabulary) -> None:
        super().__init__()
        self.model = build_model(backbone_name, clip_model, vocab, with_teacher=False).eval()
        self.backbone, self.decoder, self.csh = (
            self.model.backbone,
            self.model.decoder,
            self.model.head,
        )
        self.register_buffer("text", F.normalize(vocab.text, dim=-1), persistent=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.model.pixel_mean

    @property
    def std(self) -> torch.Tensor:
        return self.model.pixel_std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` 0..255 -> decoder output ``(B, E, H/4, W/4)``."""
        return self.decoder(self.backbone((images - self.mean) / self.std))

    def classify(self, fc: torch.Tensor) -> torch.Tensor:
        """Cosine logits ``(B, h, w, D) -> (B, N, h, w)``, divided by the temperature."""
        logits = F.normalize(fc, dim=-1) @ self.text.t() / self.model.logit_tau  # (B, h, w, N)
        return logits.permute(0, 3, 1, 2)  # (B, N, h, w)

    @staticmethod
    def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bilinear ``(B, N, h, w) -> (B, N, H, W)`` (done once, on the logits)."""
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward(
        self,
        images: torch.Tensor,
        head_stride: int = 4,
        chunk_tokens: int | None = None,
        precision: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Full inference ``(B, 3, H, W) -> (B, N, H, W)`` logits: the core's ``forward_test``.

        Args:
            images: ``(B, 3, H, W)`` 0..255.
            head_stride: 4 = the exact model; 8 = the core's inexact ``head_downsample=2``
                option (decoder output 2x2 average-pooled before the CSH, logits upsampled once).
            chunk_tokens: CSH positions per chunk (None = the core's default, 0 = one pass).
            precision: the core's autocast dtype (``TEST.AMP``); None = float32.
        """
        if head_stride not in (4, 8):
            raise ValueError(f"head_stride must be 4 (exact) or 8 (inexact), got {head_stride}")
        options = InferenceConfig(head_downsample=head_stride // 4, precision=precision)
        if chunk_tokens is not None:
            options = replace(options, chunk_tokens=chunk_tokens)
        return self.model.forward_test(images, self.text, options)
