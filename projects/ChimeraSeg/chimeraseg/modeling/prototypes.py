"""Class prototypes: mean CSH feature per label of the pseudo mask (paper eq. 5).

The training step keeps them as a :class:`PrototypeTable`, one row per label value, so their
shapes do not depend on the labels present and no step waits for the device; the per-image lists
of :class:`ImagePrototypes` are the same prototypes in compact form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from chimeraseg import IGNORE_LABEL
from chimeraseg.utils.precision import float32_island

__all__ = [
    "ImagePrototypes",
    "PrototypeTable",
    "as_prototype_table",
    "class_prototypes",
    "downsample_labels",
    "prototype_table",
]

NUM_LABEL_VALUES = IGNORE_LABEL + 1  # rows of a PrototypeTable: labels 0..254 and 255


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


@dataclass
class PrototypeTable:
    """Prototypes of a batch with fixed shapes: one row per label value (255 never present).

    Indexing and ``len`` treat it as the list of its images' :class:`ImagePrototypes`.

    Attributes:
        means: ``(B, 256, D)`` float32 mean feature per label (0 where absent).
        present: ``(B, 256)`` bool, the labels with a prototype in each image.
        num_seen: ``Ns``: rows below it are seen classes.
        latent_start: first latent label (rows from ``num_seen`` up to it, the transductive
            unseen labels, are never present).
        dtype: the features' dtype, that of the compact per-image prototypes.
    """

    means: torch.Tensor
    present: torch.Tensor
    num_seen: int
    latent_start: int
    dtype: torch.dtype = torch.float32

    def __len__(self) -> int:
        """Number of images ``B``."""
        return self.means.shape[0]

    def __getitem__(self, index: int) -> ImagePrototypes:
        """Image ``index``'s prototypes, compact (a host read: for inspection, not training)."""
        means, present = self.means[index].to(self.dtype), self.present[index]
        ids = torch.nonzero(present).squeeze(1)  # (L,) ascending
        seen_ids, latent_ids = ids[ids < self.num_seen], ids[ids >= self.latent_start]
        return ImagePrototypes(seen_ids, means[seen_ids], latent_ids, means[latent_ids])

    def images(self) -> list[ImagePrototypes]:
        """The same prototypes, compact, one :class:`ImagePrototypes` per image."""
        return [self[i] for i in range(len(self))]

    @classmethod
    def from_images(
        cls, images: list[ImagePrototypes], num_seen: int, latent_start: int
    ) -> PrototypeTable:
        """The table of per-image prototypes (ids below 255; rows float32)."""
        dim = images[0].seen.shape[-1]  # (O, D) rows, also when O = 0
        device = images[0].seen.device
        means = torch.zeros(len(images), NUM_LABEL_VALUES, dim, device=device)
        present = torch.zeros(len(images), NUM_LABEL_VALUES, dtype=torch.bool, device=device)
        for i, proto in enumerate(images):
            ids = torch.cat([proto.seen_ids, proto.latent_ids]).long()
            means = means.index_put(
                (torch.full_like(ids, i), ids), torch.cat([proto.seen, proto.latent]).float()
            )
            present[i, ids] = True
        return cls(means, present, num_seen, latent_start, images[0].seen.dtype)


def as_prototype_table(
    prototypes: PrototypeTable | list[ImagePrototypes], num_seen: int, latent_start: int
) -> PrototypeTable:
    """``prototypes`` as a :class:`PrototypeTable` (a list is converted, rows at its ids)."""
    if isinstance(prototypes, PrototypeTable):
        return prototypes
    return PrototypeTable.from_images(list(prototypes), num_seen, latent_start)


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


def prototype_table(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_seen: int,
    latent_start: int | None = None,
) -> PrototypeTable:
    """Mean feature of every label present in each image, as a fixed-shape table.

    Labels in ``[num_seen, latent_start)`` (transductive unseen pseudo labels, classified by their
    text embeddings) get no prototype. Sums and means are float32 whatever autocast is active,
    and every image's positions add up in their order (the same sums as a per-label loop).

    Args:
        features: ``(B, D, h, w)`` CSH output ``Fc`` (gradient flows into the prototypes).
        labels: ``(B, h, w)`` long pseudo labels at feature resolution (see
            :func:`downsample_labels`); 255 pixels are skipped.
        num_seen: ``Ns``; labels below it are seen classes.
        latent_start: first latent label (defaults to ``num_seen``).

    Returns:
        The batch's :class:`PrototypeTable`.
    """
    if features.dim() != 4 or labels.shape != (features.shape[0], *features.shape[2:]):
        raise ValueError(
            f"class_prototypes: features {tuple(features.shape)} must be (B, D, h, w) and labels "
            f"{tuple(labels.shape)} must be (B, h, w) at the same resolution"
        )
    latent_start = num_seen if latent_start is None else latent_start
    b, d = features.shape[:2]
    with float32_island(features.device):
        tokens = features.float().flatten(2).transpose(1, 2).reshape(-1, d)  # (B·h·w, D)
        flat = labels.flatten(1)  # (B, h·w)
        keep = (flat >= 0) & (flat < IGNORE_LABEL) & ((flat < num_seen) | (flat >= latent_start))
        image_rows = NUM_LABEL_VALUES * torch.arange(b, device=flat.device)[:, None]  # (B, 1)
        rows = (torch.where(keep, flat, IGNORE_LABEL) + image_rows).flatten()  # (B·h·w,)
        sums = tokens.new_zeros(b * NUM_LABEL_VALUES, d).index_add(0, rows, tokens)
        ones = torch.ones_like(rows, dtype=torch.float32)
        counts = ones.new_zeros(b * NUM_LABEL_VALUES).index_add(0, rows, ones)  # exact < 2^24
        means = sums / counts.clamp_min(1.0)[:, None]  # (B·256, D), 0 where absent
    present = (counts > 0).view(b, NUM_LABEL_VALUES)
    present[:, IGNORE_LABEL] = False  # the row of the skipped positions
    means = means.view(b, NUM_LABEL_VALUES, d)  # (B, 256, D)
    return PrototypeTable(means, present, num_seen, latent_start, features.dtype)


def class_prototypes(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_seen: int,
    latent_start: int | None = None,
) -> list[ImagePrototypes]:
    """:func:`prototype_table` as one :class:`ImagePrototypes` per image (arguments alike)."""
    return prototype_table(features, labels, num_seen=num_seen, latent_start=latent_start).images()
