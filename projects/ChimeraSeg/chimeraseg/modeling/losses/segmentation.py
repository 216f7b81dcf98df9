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
from chimeraseg.modeling.prototypes import PrototypeTable, as_prototype_table
from chimeraseg.utils.precision import float32_island

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
    # Means over the valid pixels by masked sums (fixed shapes: the host never waits here).
    num_valid = valid.sum().clamp_min(1)
    safe_target = target.masked_fill(~valid, 0)
    log_prob = F.log_softmax(logits.float(), dim=1)  # (B, C, H, W), float32 for stability
    log_p_t = log_prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (B, H, W)
    log_p_t = torch.where(valid, log_p_t, -1.0)  # ignored pixels: finite, no gradient
    loss = logits.new_zeros((), dtype=torch.float32)
    if ce_weight != 0.0:
        loss = loss + ce_weight * torch.where(valid, -log_p_t, 0.0).sum() / num_valid
    if focal_weight != 0.0:
        p_t = log_p_t.exp()
        focal = -((1.0 - p_t).clamp_min(0.0) ** focal_gamma) * log_p_t
        loss = loss + focal_weight * torch.where(valid, focal, 0.0).sum() / num_valid
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
        features, labels = outputs.features, outputs.pseudo_labels
        c0 = outputs.classifier_text.shape[0]
        table = as_prototype_table(outputs.prototypes, outputs.seen_text.shape[0], c0)
        with float32_island(features.device):  # cosines / tau in float32 under autocast
            classifier, present, lut = _classifier(outputs.classifier_text.float(), table)
            target = lut.gather(1, labels.flatten(1)).view_as(labels)  # (B, H, W) columns
            tokens = F.normalize(features.float().permute(0, 2, 3, 1), dim=-1)  # (B, h, w, D)
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


def _classifier(
    text: torch.Tensor, table: PrototypeTable
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image classifier ``cat(text, unit latent prototypes)`` and its label -> column table.

    The latent columns of an image are its present latent labels in ascending order, padded to
    the batch's largest count (one read of the device: the classifier's width).

    Args:
        text: ``(C0, D)`` float32 unit text rows; labels ``0..C0-1`` are their columns.
        table: the batch's prototypes; rows ``C0..254`` are the latent labels.

    Returns:
        ``(B, C, D)`` classifier, ``(B, C)`` bool real columns and ``(B, 256)`` long column of
        every label value (255 for ignore and latent labels without a prototype).
    """
    b, c0 = table.present.shape[0], text.shape[0]
    latent_present = table.present[:, c0:IGNORE_LABEL]  # (B, L) latent labels c0..254
    width = int(latent_present.sum(dim=1).max()) if latent_present.shape[1] else 0
    order = (~latent_present).to(torch.uint8).argsort(dim=1, stable=True)[:, :width]  # (B, W)
    real = latent_present.gather(1, order)  # (B, W) present labels first, ascending
    rows = table.means[:, c0:IGNORE_LABEL].gather(1, order[..., None].expand(-1, -1, text.shape[1]))
    latent = F.normalize(rows, dim=-1) * real[..., None]  # (B, W, D), zero rows where padded
    classifier = torch.cat([text.expand(b, -1, -1), latent], dim=1)  # (B, C0 + W, D)
    present = torch.cat([real.new_ones(b, c0), real], dim=1)  # (B, C0 + W)
    column = c0 + latent_present.long().cumsum(dim=1) - 1  # (B, L)
    latent_lut = torch.where(latent_present, column, IGNORE_LABEL)
    text_lut = torch.arange(c0, device=text.device).expand(b, -1)
    ignore_lut = torch.full((b, 1), IGNORE_LABEL, dtype=torch.long, device=text.device)
    return classifier, present, torch.cat([text_lut, latent_lut, ignore_lut], dim=1)
