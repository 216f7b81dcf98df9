"""Semantic Alignment Module loss (paper §III-D, eq. 6).

:func:`semantic_alignment_loss` is the KL divergence; :class:`SAMLoss` (registered as
``loss_sam``) applies it to the batch's seen prototypes and the (gathered) CLS tokens.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.modeling.losses.outputs import TrainingOutputs
from chimeraseg.modeling.losses.registry import register_loss
from chimeraseg.modeling.prototypes import ImagePrototypes, PrototypeTable
from chimeraseg.utils.distributed import all_gather_rows, is_distributed, mean_count_per_process
from chimeraseg.utils.precision import float32_island

if TYPE_CHECKING:
    from chimeraseg.modeling.settings import LossSettings

__all__ = ["SAMLoss", "semantic_alignment_loss"]


def semantic_alignment_loss(
    seen_protos: torch.Tensor,
    seen_text: torch.Tensor,
    cls: torch.Tensor,
    tau_f: float,
    tau_c: float,
    normaliser: float | None = None,
) -> torch.Tensor:
    """KL(softmax(protos·clsᵀ/τf) ‖ softmax(text·clsᵀ/τc)), averaged over prototypes.

    Every vector is L2-normalised first, so both similarity matrices hold cosines. Row ``o`` of
    ``P`` (prototype ``o`` against every image's CLS token) is compared with row ``o`` of ``Q``
    (the text embedding of the same seen class against the same CLS tokens); the KL divergence is
    summed over the batch dimension and averaged over the ``O`` prototypes (or summed over them
    and divided by ``normaliser``).

    Args:
        seen_protos: ``(O, D)`` seen-class visual prototypes (gradient flows through them).
        seen_text: ``(O, D)`` text embeddings of the same seen classes, row-aligned.
        cls: ``(B, D)`` CLIP CLS embeddings of the (gathered, global) batch.
        tau_f: temperature of the prototype distribution ``P``.
        tau_c: temperature of the text distribution ``Q``.
        normaliser: divisor of the summed KL; None = ``O`` (the local mean). Under DDP the
            criterion passes the global prototype count over the world size, so that the
            average of the processes' losses is the mean over every process's prototypes.

    Returns:
        Scalar loss; exactly 0 (attached to the graph of ``seen_protos``) when ``B == 1`` or
        ``O == 0``, where the distribution over the batch is trivial.

    Raises:
        ValueError: on mismatched shapes, or a ``normaliser`` that is not finite and > 0 where
            there are prototypes to normalise.
    """
    if seen_protos.dim() != 2 or seen_protos.shape != seen_text.shape:
        raise ValueError(
            f"semantic_alignment_loss: seen_protos {tuple(seen_protos.shape)} and seen_text "
            f"{tuple(seen_text.shape)} must both be (O, D)"
        )
    if cls.dim() != 2 or cls.shape[1] != seen_protos.shape[1]:
        raise ValueError(
            f"semantic_alignment_loss: cls {tuple(cls.shape)} must be (B, D) with "
            f"D = {seen_protos.shape[1]}"
        )
    if cls.shape[0] <= 1 or seen_protos.shape[0] == 0:
        return seen_protos.sum() * 0.0
    if normaliser is not None and not (math.isfinite(normaliser) and normaliser > 0):
        raise ValueError(
            f"semantic_alignment_loss: normaliser={normaliser!r} must be finite and > 0"
        )
    kl = _kl_rows(seen_protos, seen_text, cls, tau_f, tau_c)  # (O,)
    return kl.mean() if normaliser is None else kl.sum() / normaliser


def _kl_rows(
    protos: torch.Tensor, text: torch.Tensor, cls: torch.Tensor, tau_f: float, tau_c: float
) -> torch.Tensor:
    """``(O,)`` KL(P_o ‖ Q_o) of ``(O, D)`` prototypes and text rows against ``(B, D)`` CLS tokens,
    in float32 whatever autocast is active (the cosines meet the temperatures)."""
    with float32_island(protos.device):
        protos = F.normalize(protos.float(), dim=-1)
        text = F.normalize(text.float(), dim=-1)
        cls_n = F.normalize(cls.float(), dim=-1)
        log_p = F.log_softmax(protos @ cls_n.t() / tau_f, dim=1)  # (O, B)
        log_q = F.log_softmax(text @ cls_n.t() / tau_c, dim=1)  # (O, B)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1)  # (O,) KL(P_o ‖ Q_o)


@register_loss("loss_sam")
class SAMLoss(nn.Module):
    """``Lsam`` of the local seen prototypes against the (gathered) CLS tokens ``(B, D)``.

    Args:
        settings: the criterion's settings (``settings.sam`` and ``settings.gather`` are read).
    """

    def __init__(self, settings: LossSettings) -> None:
        super().__init__()
        self.settings, self.gather = settings.sam, settings.gather

    def forward(self, outputs: TrainingOutputs, iteration: int) -> torch.Tensor:
        """The unweighted ``Lsam`` of the batch (``iteration`` is unused).

        Normalised by the global prototype count over the world size (every process joins the
        all-reduce, also one without prototypes), so DDP's average of the processes' losses is the
        mean over all prototypes; in one process that is the plain mean.
        """
        seen, seen_ids, present = _seen_rows(outputs.prototypes, outputs.seen_text.shape[0])
        count = present.sum()  # () the local prototypes
        normaliser = count  # one process: the plain mean
        if is_distributed():
            normaliser = mean_count_per_process(count, seen.device)
        if self.gather:
            all_cls, _ = all_gather_rows(outputs.cls)  # (B_global, D), no gradient
        else:
            all_cls = outputs.cls.detach()  # (B, D) local batch only
        if all_cls.shape[0] <= 1:  # the distribution over the batch is trivial
            return seen.sum() * 0.0
        text = outputs.seen_text[seen_ids]  # (O, D), row-aligned
        kl = _kl_rows(seen, text, all_cls, self.settings.tau_f, self.settings.tau_c)
        total = torch.where(present, kl, 0.0).sum()  # exactly 0 without prototypes
        denominator = torch.where(count > 0, torch.as_tensor(normaliser, device=seen.device), 1)
        return total / denominator.to(total.dtype)


def _seen_rows(
    prototypes: PrototypeTable | list[ImagePrototypes], num_seen: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seen prototype rows ``(O, D)``, their class ids ``(O,)`` and which are real ``(O,)``.

    A :class:`PrototypeTable` gives all ``B·Ns`` rows with a mask (fixed shapes); a list gives
    its rows, all real.
    """
    if isinstance(prototypes, PrototypeTable):
        b = prototypes.means.shape[0]
        seen = prototypes.means[:, :num_seen].flatten(0, 1)  # (B·Ns, D)
        ids = torch.arange(num_seen, device=seen.device).repeat(b)  # (B·Ns,)
        return seen, ids, prototypes.present[:, :num_seen].flatten()
    seen = torch.cat([p.seen for p in prototypes])  # (O, D), local batch
    ids = torch.cat([p.seen_ids for p in prototypes])  # (O,)
    return seen, ids, torch.ones_like(ids, dtype=torch.bool)
