"""Class prototypes: mean CSH feature per label of the pseudo mask (paper eq. 5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from chimeraseg import IGNORE_LABEL

__all__ = ["ImagePrototypes", "class_prototypes", "downsample_labels"]


@dataclass
class ImagePrototypes:
    """Prototypes of one image.

    Attributes:
        seen_ids: ``(Os,)`` long seen class indices (``< num_seen``) present, ascending.
        seen: ``(Os, D)`` their mean features.
        latent_ids: ``(Ou,)`` long latent labels (``>= latent_start``) present, ascending.
        latent: ``(Ou, D)`` their mean features.
    """

    seen_ids: torch.Tensor
    seen: torch.Tensor
    latent_ids: torch.Tensor
    latent: torch.Tensor


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest downsampling of a label map (PyTorch ``"nearest"``: ``src = floor(dst·scale)``).

    Args:
        labels: ``(B, H, W)`` long.
        size: target ``(h, w)``.

    Returns:
        ``(B, h, w)`` long.
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    # Exact for label values < 2^24 (float32 mantissa); labels are < 256 here.
    small = F.interpolate(labels[:, None].float(), size=size, mode="nearest")  # (B, 1, h, w)
    return small[:, 0].long()


def class_prototypes(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_seen: int,
    latent_start: int | None = None,
) -> list[ImagePrototypes]:
    """Mean feature of every label present in each image.

    Labels in ``[num_seen, latent_start)`` (transductive unseen pseudo labels, classified by their
    text embeddings) get no prototype.

    Args:
        features: ``(B, D, h, w)`` CSH output ``Fc`` (gradient flows into the prototypes).
        labels: ``(B, h, w)`` long pseudo labels at feature resolution (see
            :func:`downsample_labels`); 255 pixels are skipped.
        num_seen: ``Ns``; labels below it are seen classes.
        latent_start: first latent label (defaults to ``num_seen``).

    Returns:
        One :class:`ImagePrototypes` per image.
    """
    if features.dim() != 4 or labels.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(
            f"class_prototypes: features {tuple(features.shape)} must be (B, D, h, w) and labels "
            f"{tuple(labels.shape)} must be (B, h, w) at the same resolution"
        )
    latent_start = num_seen if latent_start is None else latent_start
    tokens = features.flatten(2).transpose(1, 2)  # (B, h·w, D)
    flat = labels.flatten(1)  # (B, h·w)
    out = []
    for tok, lab in zip(tokens, flat):
        keep = (lab != IGNORE_LABEL) & ((lab < num_seen) | (lab >= latent_start))
        ids, inverse = torch.unique(lab[keep], sorted=True, return_inverse=True)  # (L,), (V,)
        sums = tok.new_zeros(ids.shape[0], tok.shape[1]).index_add(0, inverse, tok[keep])
        counts = torch.bincount(inverse, minlength=ids.shape[0]).to(tok.dtype)  # (L,)
        protos = sums / counts[:, None]  # (L, D)
        is_seen = ids < num_seen
        out.append(
            ImagePrototypes(
                seen_ids=ids[is_seen],
                seen=protos[is_seen],
                latent_ids=ids[~is_seen],
                latent=protos[~is_seen],
            )
        )
    return out
