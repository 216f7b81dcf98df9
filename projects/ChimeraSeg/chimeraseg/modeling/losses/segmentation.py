"""Segmentation loss of Chimera-Seg: cross-entropy plus softmax focal loss (paper eq. 4).

:func:`segmentation_loss` scores logits against labels; :class:`SegLoss` (registered as
``loss_seg``) builds the per-image classifier ``cat(As, [Au,] Fl^u)`` and its logits first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg import IGNORE_LABEL
from chimeraseg.modeling.losses.outputs import TrainingOutputs
from chimeraseg.modeling.losses.registry import register_loss

if TYPE_CHECKING:
    from chimeraseg.modeling.settings import LossSettings

__all__ = ["SegLoss", "segmentation_loss"]

_PAD_LOGIT = -1.0e4  # logit of absent latent columns: exp(-1e4) == 0, finite under upsampling


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ce_weight: float,
    focal_weight: float,
    focal_gamma: float,
) -> torch.Tensor:
    """Weighted sum of pixel-wise cross-entropy and softmax focal loss at label resolution.

    ``logits`` are bilinearly upsampled (``align_corners=False``) to the target size when the sizes
    differ. Both terms are means over the valid (non-ignored) pixels of the whole batch:
    ``CE = mean(-log p_t)`` and ``focal = mean(-(1 - p_t)^gamma log p_t)`` (softmax focal loss,
    no alpha balancing: the paper gives none). When every pixel is ignored the result is exactly 0
    and still attached to the graph of ``logits``.

    Args:
        logits: ``(B, C, h, w)`` class scores.
        target: ``(B, H, W)`` long class indices in ``[0, C)`` or 255.
        ce_weight: weight of the cross-entropy term (0 skips it).
        focal_weight: weight of the focal term (0 skips it).
        focal_gamma: focusing parameter of the focal term.

    Returns:
        Scalar loss tensor.

    Raises:
        ValueError: on mismatched shapes or target values outside ``[0, C) ∪ {IGNORE_LABEL}``.
    """
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"segmentation_loss expects logits (B, C, h, w) and target (B, H, W); got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    valid = target != IGNORE_LABEL
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise ValueError(
            f"segmentation_loss: target value {value} is outside [0, {num_classes}) and is not "
            f"the ignore value {IGNORE_LABEL}"
        )
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    num_valid = valid.sum()
    if int(num_valid) == 0:
        return logits.sum() * 0.0
    safe_target = target.masked_fill(~valid, 0)
    log_prob = F.log_softmax(logits.float(), dim=1)  # (B, C, H, W), float32 for stability
    log_p_t = log_prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (B, H, W)
    log_p_t = log_p_t[valid]  # (V,) valid pixels only
    loss = logits.new_zeros((), dtype=torch.float32)
    if ce_weight != 0.0:
        loss = loss + ce_weight * (-log_p_t).mean()
    if focal_weight != 0.0:
        p_t = log_p_t.exp()
        focal = -((1.0 - p_t).clamp_min(0.0) ** focal_gamma) * log_p_t
        loss = loss + focal_weight * focal.mean()
    return loss


@register_loss("loss_seg")
class SegLoss(nn.Module):
    """``Lseg`` over the per-image classifier ``cat(As, [Au,] Fl^u)``.

    Columns: the classifier's text rows, then the image's latent prototypes in pseudo-label order;
    latent regions that vanish at feature resolution have no prototype and are ignored.

    Args:
        settings: the criterion's settings (``settings.seg`` is read).
    """

    def __init__(self, settings: LossSettings) -> None:
        super().__init__()
        self.settings = settings.seg

    def forward(self, outputs: TrainingOutputs, iteration: int) -> torch.Tensor:
        """The unweighted ``Lseg`` of the batch (``iteration`` is unused)."""
        features, protos = outputs.features, outputs.prototypes
        b, device = features.shape[0], features.device
        text = outputs.classifier_text.to(features.dtype)  # (C0, D)
        c0 = text.shape[0]
        max_latent = max(p.latent.shape[0] for p in protos)
        classifier = text.new_zeros(b, c0 + max_latent, text.shape[1])  # (B, C, D)
        classifier[:, :c0] = text
        present = torch.zeros(b, c0 + max_latent, dtype=torch.bool, device=device)
        present[:, :c0] = True
        # Per-image label -> column table; latent labels without a prototype map to ignore.
        lut = torch.full((b, 256), IGNORE_LABEL, dtype=torch.long, device=device)
        lut[:, :c0] = torch.arange(c0, device=device)
        for i, proto in enumerate(protos):
            n = proto.latent.shape[0]
            classifier[i, c0 : c0 + n] = F.normalize(proto.latent, dim=-1)
            present[i, c0 : c0 + n] = True
            lut[i, proto.latent_ids] = torch.arange(c0, c0 + n, device=device)
        labels = outputs.pseudo_labels
        target = lut.gather(1, labels.flatten(1)).view_as(labels)  # (B, H, W)
        tokens = F.normalize(features.permute(0, 2, 3, 1), dim=-1)  # (B, h, w, D) unit
        cosine = tokens.flatten(1, 2) @ classifier.transpose(1, 2)  # (B, h·w, C)
        logits = cosine.view(*tokens.shape[:3], -1).permute(0, 3, 1, 2) / outputs.logit_tau
        logits = logits.masked_fill(~present[:, :, None, None], _PAD_LOGIT)  # (B, C, h, w)
        s = self.settings
        return segmentation_loss(
            logits,
            target,
            ce_weight=s.ce_weight,
            focal_weight=s.focal_weight,
            focal_gamma=s.focal_gamma,
        )
