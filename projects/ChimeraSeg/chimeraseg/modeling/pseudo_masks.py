"""Pseudo masks Ỹ: latent regions inside the ignore region by multi-scale K-Means, as in the paper.

Steps on the teacher grid: K-Means per window scale, greedy merging of all clusters by centroid
cosine, then every region cell goes to its nearest surviving group, where a group survives when
it keeps at least ``min_area`` cells (the smallest too-small group is dropped and its cells
reassigned, repeatedly); ``max_regions`` finally keeps the largest groups.

Label layout of the returned map (training label space):

* ``0 .. Ns-1``: seen classes, copied bit-exactly from the input label;
* transductive only, ``Ns .. Ns+Nu-1``: unseen class ``j`` (``Ns + j``) assigned by the teacher;
* ``latent_start .. latent_start+R-1``: the ``R`` latent regions of the image, largest first
  (``latent_start = Ns`` inductive, ``Ns + Nu`` transductive);
* ``255``: still ignored (outside every surviving region, or outside the ``valid`` image area).

Padding. ``valid`` (optional) marks the real image pixels; padded pixels (image 0, label 255 from
the data mapper and batch padding) are not part of the ignore region: they never seed, join or
receive a latent region or an unseen label, and stay ``255``.

Everything runs on the teacher grid ``(h', w')`` (``H/16``), batched over images and clusters,
in float32 whatever autocast is active; the grouping rules live in
:mod:`chimeraseg.modeling.pseudo_grouping`. The procedure has no randomness, so it is
deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from chimeraseg import IGNORE_LABEL
from chimeraseg.modeling.pseudo_grouping import assign_surviving as _assign_surviving
from chimeraseg.modeling.pseudo_grouping import greedy_merge as _greedy_merge
from chimeraseg.utils.precision import float32_island

__all__ = ["SETTINGS", "PseudoMaskConfig", "PseudoMasks", "generate_pseudo_masks"]

SETTINGS = ("inductive", "transductive")  # docs/METHOD.md, 'Pseudo masks'


@dataclass(frozen=True)
class PseudoMaskConfig:
    """Knobs of the pseudo-mask generator (the paper gives no values beyond the scales).

    Attributes:
        scales: K-Means seed window sides ``s`` (seeds = means over ``s×s`` windows, stride
            ``s/2``) on the teacher grid; windows larger than the grid are clipped to it.
        kmeans_iters: number of K-Means update steps per scale.
        merge_threshold: clusters of all scales merge when their centroid cosine exceeds it.
        min_area: groups with fewer teacher-grid cells are dropped (smallest first) before the
            final assignment; their cells join the nearest surviving group (they stay 255 only
            when the image's whole region has fewer than ``min_area`` cells).
        max_regions: keep at most this many regions per image (largest first; the cells of the
            others stay 255); None = no cap.
            Always capped so that labels stay below 255.
        region_ignore_fraction: a teacher cell belongs to the ignore region when at least this
            fraction of its label pixels are ignore.
        seed_region_fraction: a seed window is used when more than this fraction of its cells
            lie in the region.
        unseen_threshold: transductive: minimum teacher softmax confidence for an unseen label.
        unseen_temperature: transductive: softmax temperature over teacher-text cosines.
    """

    scales: tuple[int, ...] = (4, 8)
    kmeans_iters: int = 10
    merge_threshold: float = 0.9
    min_area: int = 4
    max_regions: int | None = None
    region_ignore_fraction: float = 0.5
    seed_region_fraction: float = 0.5
    unseen_threshold: float = 0.5
    unseen_temperature: float = 0.01

    def __post_init__(self) -> None:
        if not self.scales or any(int(s) < 1 for s in self.scales):
            raise ValueError(f"PseudoMaskConfig.scales={self.scales} must be positive integers")
        if self.kmeans_iters < 0 or self.min_area < 0:
            raise ValueError(
                f"PseudoMaskConfig: kmeans_iters={self.kmeans_iters} and "
                f"min_area={self.min_area} must be >= 0"
            )
        if self.max_regions is not None and self.max_regions < 0:
            raise ValueError(f"PseudoMaskConfig.max_regions={self.max_regions} must be >= 0")
        for name, low, high in _FRACTION_RANGES:
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"PseudoMaskConfig.{name}={value!r} must be in [{low}, {high}]")
        if not (math.isfinite(self.unseen_temperature) and self.unseen_temperature > 0):
            raise ValueError(
                f"PseudoMaskConfig.unseen_temperature={self.unseen_temperature!r} must be > 0"
            )


# Thresholds of PseudoMaskConfig: a cosine in [-1, 1], fractions and a softmax score in [0, 1];
# outside these ranges the generator silently never merges, seeds or labels.
_FRACTION_RANGES = (
    ("merge_threshold", -1.0, 1.0),
    ("region_ignore_fraction", 0.0, 1.0),
    ("seed_region_fraction", 0.0, 1.0),
    ("unseen_threshold", 0.0, 1.0),
)


@dataclass
class PseudoMasks:
    """Result of :func:`generate_pseudo_masks`.

    Attributes:
        labels: ``(B, H, W)`` long pseudo labels (layout in the module docstring).
        num_latent: ``(B,)`` long number of latent regions per image.
        latent_start: first latent label.
    """

    labels: torch.Tensor
    num_latent: torch.Tensor
    latent_start: int


def cell_fraction(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of ``True`` pixels of ``mask (B, H, W)`` in each ``grid`` cell: ``(B, h, w)``."""
    return F.adaptive_avg_pool2d(mask[:, None].float(), grid)[:, 0]


def generate_pseudo_masks(
    labels: torch.Tensor,
    teacher_dense: torch.Tensor,
    *,
    num_seen: int,
    mode: str = "inductive",
    seen_text: torch.Tensor | None = None,
    unseen_text: torch.Tensor | None = None,
    config: PseudoMaskConfig | None = None,
    valid: torch.Tensor | None = None,
) -> PseudoMasks:
    """Fills ignore pixels with latent regions (and, transductively, unseen classes).

    Args:
        labels: ``(B, H, W)`` long training labels: seen classes ``0..Ns-1``, 255.
        teacher_dense: ``(B, D, h', w')`` teacher patch features (any norm).
        num_seen: ``Ns``.
        mode: ``"inductive"`` or ``"transductive"``.
        seen_text: ``(Ns, D)`` seen text embeddings (transductive only).
        unseen_text: ``(Nu, D)`` unseen text embeddings (transductive only).
        config: generator knobs (defaults when None).
        valid: ``(B, H, W)`` bool, real (unpadded) pixels; None = every pixel is valid (then the
            result is bit-identical to not passing it). Only valid ignore pixels form and receive
            regions, and a teacher cell belongs to the region only if, in addition to the
            ``region_ignore_fraction`` rule on valid ignore pixels, at least half of its pixels
            are valid.

    Returns:
        :class:`PseudoMasks`; the map equals ``labels`` wherever ``labels != IGNORE_LABEL`` or
        ``valid`` is False.
    """
    cfg = config or PseudoMaskConfig()
    if mode not in SETTINGS:
        raise ValueError(f"generate_pseudo_masks: mode={mode!r} is not one of {SETTINGS}")
    if labels.dim() != 3 or teacher_dense.dim() != 4 or labels.shape[0] != teacher_dense.shape[0]:
        raise ValueError(
            f"generate_pseudo_masks: labels {tuple(labels.shape)} must be (B, H, W) and "
            f"teacher_dense {tuple(teacher_dense.shape)} (B, D, h', w')"
        )
    num_unseen = 0
    if mode == "transductive":
        if seen_text is None or unseen_text is None or seen_text.shape[0] != num_seen:
            raise ValueError(
                "generate_pseudo_masks: transductive mode needs seen_text (Ns, D) with "
                f"Ns = {num_seen} and unseen_text (Nu, D)"
            )
        num_unseen = unseen_text.shape[0]
    latent_start = num_seen + num_unseen
    if latent_start >= IGNORE_LABEL:
        raise ValueError(
            f"generate_pseudo_masks: {latent_start} seen+unseen classes leave no label below "
            f"ignore label {IGNORE_LABEL} for latent regions"
        )
    grid = tuple(teacher_dense.shape[-2:])
    ignore = labels == IGNORE_LABEL  # (B, H, W)
    if valid is not None:
        if valid.shape != labels.shape or valid.dtype != torch.bool:
            raise ValueError(
                f"generate_pseudo_masks: valid {tuple(valid.shape)} {valid.dtype} must be a bool "
                f"tensor shaped like labels {tuple(labels.shape)}"
            )
        ignore = ignore & valid  # padding is not part of the ignore region
    # Float32 whatever autocast is active: cosines meet a 0.01 temperature, K-Means' argmax
    # and the 0.9 merge threshold (docs/GPU.md, 'Mixed precision and the pseudo masks').
    with float32_island(teacher_dense.device):
        fraction = cell_fraction(ignore, grid)  # (B, h', w')
        region = (fraction >= cfg.region_ignore_fraction) & (fraction > 0)
        if valid is not None:
            region = region & (cell_fraction(valid, grid) >= 0.5)
        feats = F.normalize(teacher_dense.float(), dim=1)  # (B, D, h', w') unit cells
        cells = torch.full_like(region, IGNORE_LABEL, dtype=torch.long)  # (B, h', w')
        if mode == "transductive":
            unseen_cells = _assign_unseen(feats, region, seen_text, unseen_text, cfg)  # (B, h', w')
            cells = torch.where(unseen_cells >= 0, unseen_cells, cells)
            region = region & (unseen_cells < 0)
        cap = IGNORE_LABEL - latent_start
        max_regions = cap if cfg.max_regions is None else min(cfg.max_regions, cap)
        latent, num_latent = _latent_regions(feats, region, cfg, max_regions)  # (B, h', w'), (B,)
        cells = torch.where(latent >= 0, latent + latent_start, cells)
        # Nearest upsampling to label resolution; exact 16×16 blocks when H = 16·h'.
        dense_labels = F.interpolate(cells[:, None].float(), size=labels.shape[-2:], mode="nearest")
        dense_labels = dense_labels[:, 0].long()  # (B, H, W)
        out = torch.where(ignore, dense_labels, labels)  # only (valid) ignore pixels change
    return PseudoMasks(labels=out, num_latent=num_latent, latent_start=latent_start)


def _assign_unseen(
    feats: torch.Tensor,
    region: torch.Tensor,
    seen_text: torch.Tensor,
    unseen_text: torch.Tensor,
    cfg: PseudoMaskConfig,
) -> torch.Tensor:
    """Transductive MaskCLIP+-style labels: ``(B, h', w')`` ``Ns + j`` or -1."""
    text = F.normalize(torch.cat([seen_text, unseen_text]).float(), dim=-1)  # (Ns+Nu, D)
    logits = torch.einsum("bdhw,nd->bnhw", feats, text) / cfg.unseen_temperature
    confidence, best = logits.softmax(dim=1).max(dim=1)  # (B, h', w')
    take = region & (best >= seen_text.shape[0]) & (confidence > cfg.unseen_threshold)
    return torch.where(take, best, torch.full_like(best, -1))


def _window_seeds(
    feats: torch.Tensor, region: torch.Tensor, scale: int, min_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region-masked mean features of ``s×s`` windows with stride ``s/2``.

    Returns:
        ``(B, K, D)`` unit seeds and ``(B, K)`` validity (window mostly inside the region).
    """
    h, w = feats.shape[-2:]
    kernel = (min(scale, h), min(scale, w))  # windows larger than the grid are clipped
    stride = (max(1, kernel[0] // 2), max(1, kernel[1] // 2))
    mask = region[:, None].to(feats.dtype)  # (B, 1, h', w')
    sums = F.avg_pool2d(feats * mask, kernel, stride)  # (B, D, kh, kw)
    frac = F.avg_pool2d(mask, kernel, stride)  # (B, 1, kh, kw)
    seeds = F.normalize(sums.flatten(2).transpose(1, 2), dim=-1)  # (B, K, D)
    return seeds, frac.flatten(1) > min_fraction  # (B, K)


def _kmeans(
    points: torch.Tensor, mask: torch.Tensor, seeds: torch.Tensor, valid: torch.Tensor, iters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched spherical K-Means (cosine) over the masked points.

    Args:
        points: ``(B, N, D)`` unit vectors.
        mask: ``(B, N)`` bool, points that take part.
        seeds: ``(B, K, D)`` initial unit centroids.
        valid: ``(B, K)`` bool, usable seeds.
        iters: update steps.

    Returns:
        ``(B, K, D)`` centroids and ``(B, K)`` final cluster sizes (0 for invalid/empty).
    """
    centroids = seeds
    weight = mask[..., None].to(points.dtype) * valid[:, None, :].to(points.dtype)  # (B, N, K)
    for step in range(iters + 1):
        sim = points @ centroids.transpose(1, 2)  # (B, N, K)
        assign = sim.masked_fill(~valid[:, None, :], float("-inf")).argmax(dim=-1)  # (B, N)
        onehot = F.one_hot(assign, centroids.shape[1]).to(points.dtype) * weight  # (B, N, K)
        counts = onehot.sum(dim=1)  # (B, K)
        if step == iters:
            break
        sums = onehot.transpose(1, 2) @ points  # (B, K, D), bmm: deterministic
        centroids = torch.where(counts[..., None] > 0, F.normalize(sums, dim=-1), centroids)
    return centroids, counts


def _latent_regions(
    feats: torch.Tensor, region: torch.Tensor, cfg: PseudoMaskConfig, max_regions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale K-Means + merging + area filter on the teacher grid.

    Args:
        feats: ``(B, D, h', w')`` unit teacher features.
        region: ``(B, h', w')`` bool ignore-region cells.
        cfg: generator knobs.
        max_regions: regions kept per image, largest first.

    Returns:
        ``(B, h', w')`` long region index (0 = largest) or -1, and ``(B,)`` region counts.
    """
    b, _, h, w = feats.shape
    points = feats.flatten(2).transpose(1, 2)  # (B, N, D)
    mask = region.flatten(1)  # (B, N)
    all_centroids, all_counts = [], []
    for scale in cfg.scales:
        seeds, valid = _window_seeds(feats, region, int(scale), cfg.seed_region_fraction)
        cents, counts = _kmeans(points, mask, seeds, valid, cfg.kmeans_iters)
        all_centroids.append(cents)
        all_counts.append(counts)
    # Fallback (not in the paper): a region with no window "mostly inside" it gets one seed, its
    # mean, so small regions are not lost for lack of seeds (min_area still applies).
    no_seed = mask.any(dim=1) & ~(torch.cat(all_counts, dim=1) > 0).any(dim=1)  # (B,)
    mean_seed = F.normalize((points * mask[..., None]).sum(dim=1, keepdim=True), dim=-1)
    cents, counts = _kmeans(points, mask, mean_seed, no_seed[:, None], cfg.kmeans_iters)
    all_centroids.append(cents)
    all_counts.append(counts)
    groups, group_valid = _greedy_merge(
        torch.cat(all_centroids, dim=1), torch.cat(all_counts, dim=1), cfg.merge_threshold
    )
    num_groups = groups.shape[1]
    if num_groups == 0:
        return torch.full((b, h, w), -1, dtype=torch.long, device=feats.device), mask.new_zeros(
            b, dtype=torch.long
        )
    sim = points @ groups.transpose(1, 2)  # (B, N, G) cell-to-group cosines
    assign, area, keep = _assign_surviving(sim, mask, group_valid, max(cfg.min_area, 1))
    order = torch.where(keep, area, torch.full_like(area, -1)).argsort(
        dim=1, descending=True, stable=True
    )  # (B, G) largest first, ties by index
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(num_groups, device=feats.device).expand(b, -1)
    )
    keep &= rank < max_regions
    new_label = torch.where(keep, rank, torch.full_like(rank, -1))  # kept ranks are 0..R-1
    cells = new_label.gather(1, assign).masked_fill(~mask, -1)  # (B, N)
    return cells.view(b, h, w), keep.sum(dim=1)
