"""Segmentation loss of Chimera-Seg: cross-entropy plus softmax focal loss (paper eq. 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chimeraseg import IGNORE_LABEL

__all__ = ["segmentation_loss"]


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ce_weight: float = 1.0,
    focal_weight: float = 1.0,
    focal_gamma: float = 2.0,
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
