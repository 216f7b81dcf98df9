"""Semantic Alignment Module loss (paper §III-D, eq. 6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["semantic_alignment_loss"]


def semantic_alignment_loss(
    seen_protos: torch.Tensor,
    seen_text: torch.Tensor,
    cls: torch.Tensor,
    tau_f: float = 0.07,
    tau_c: float = 0.01,
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
    protos = F.normalize(seen_protos.float(), dim=-1)
    text = F.normalize(seen_text.float(), dim=-1)
    cls_n = F.normalize(cls.float(), dim=-1)
    log_p = F.log_softmax(protos @ cls_n.t() / tau_f, dim=1)  # (O, B)
    log_q = F.log_softmax(text @ cls_n.t() / tau_c, dim=1)  # (O, B)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)  # (O,) KL(P_o ‖ Q_o)
    return kl.mean() if normaliser is None else kl.sum() / normaliser
