"""Unseen-logit bias (γ) applied to many values in one pass, one confusion matrix per γ.

Inductive zero-shot inference adds γ to the logits of the unseen classes before the argmax
(paper §III-D; docs/METHOD.md, 'Inference'). The reference semantics for one γ is
:func:`biased_argmax`: ``argmax_c (z_c + γ·[c unseen])`` computed in the logits' dtype, ties going
to the lowest class index (``torch.argmax`` returns the first maximum).

The sweep computes, once per pixel, the best seen class (value ``s``, index ``a_s``) and the best
unseen class (value ``u``, index ``a_u``). Because floating-point addition is monotone, the
biased unseen maximum is exactly ``fl(u + γ)`` and the unseen class wins iff
``fl(u + γ) > s`` or (``fl(u + γ) == s`` and ``a_u < a_s``) -- a condition monotone in γ. So
each pixel switches from ``a_s`` to ``a_u`` at one position ``k`` in the sorted γ list, and
all per-γ confusion matrices follow from two histograms over ``(k, gt, pred)`` and cumulative
sums: the cost does not grow with the number of γ beyond a few comparisons per pixel.

One corner is handled exactly rather than approximately: when adding γ rounds two different
unseen logits to the same value, the reference argmax may pick a lower-index unseen class than
``a_u``. Such pixels (detected with the second-largest unseen value) are recomputed with the
reference per γ; with real logits they are rare (none in the random-logit tests).

The per-pixel statistics come from :mod:`chimeraseg.evaluation.pixel_statistics` (one streaming
pass over the class rows on CPU); per γ only a few ``(P,)`` ops remain and the confusion matrices
come from two ``bincount`` calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from chimeraseg.evaluation.metrics import ArrayLike, check_class_ids
from chimeraseg.evaluation.pixel_statistics import PixelStatistics, pixel_statistics

__all__ = [
    "unseen_class_mask",
    "biased_argmax",
    "sweep_confusion",
    "GammaSweepAccumulator",
]


def unseen_class_mask(
    num_classes: int, unseen_ids: Sequence[int], device: torch.device | str | None = None
) -> torch.Tensor:
    """``(N,)`` bool mask, True for the unseen classes; raises on ids outside ``[0, N)``."""
    bad = [int(i) for i in unseen_ids if not 0 <= int(i) < num_classes]
    if bad:
        raise ValueError(f"unseen class ids {bad} are outside [0, {num_classes})")
    mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    mask[list(map(int, unseen_ids))] = True
    return mask


def _class_dim_first(logits: torch.Tensor, unseen_mask: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` or ``(B, N, H, W)`` -> ``(N, P)`` with ``P`` = all pixels, after checks."""
    if logits.dim() not in (3, 4):
        raise ValueError(f"logits must be (N, H, W) or (B, N, H, W), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    n = logits.shape[-3]
    if unseen_mask.shape != (n,):
        raise ValueError(f"unseen mask shape {tuple(unseen_mask.shape)} != ({n},) logit classes")
    if logits.dim() == 4:
        logits = logits.transpose(0, 1)  # (B, N, H, W) -> (N, B, H, W)
    return logits.reshape(n, -1)  # (N, P)


def _gamma_tensor(gamma: float, like: torch.Tensor) -> torch.Tensor:
    """γ as a 0-d tensor of the logits' dtype, so every path rounds identically."""
    if not np.isfinite(gamma):
        raise ValueError(f"gamma must be finite, got {gamma}")
    return torch.tensor(float(gamma), dtype=like.dtype, device=like.device)


def biased_argmax(logits: torch.Tensor, unseen_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reference prediction for one γ: ``argmax_c (z_c + γ·[c unseen])``, first index on ties.

    Args:
        logits: ``(N, H, W)`` or ``(B, N, H, W)`` unbiased logits.
        unseen_mask: ``(N,)`` bool, True for unseen classes.
        gamma: bias added to the unseen logits.

    Returns:
        ``(H, W)`` or ``(B, H, W)`` int64 class ids.
    """
    _class_dim_first(logits, unseen_mask.to(logits.device))  # checks only
    g = _gamma_tensor(gamma, logits)
    bias = unseen_mask.to(device=logits.device, dtype=logits.dtype) * g  # (N,): γ or 0
    return (logits + bias.view(-1, 1, 1)).argmax(dim=-3)


def _seen_threshold(stats: PixelStatistics) -> torch.Tensor:
    """``(P,)`` ``t`` with: the seen class wins under ``g`` iff ``fl(u + g) < t``.

    The seen class wins iff ``m < s``, or ``m == s`` and it has the lower index; in the
    latter case ``m <= s`` is ``m < nextafter(s, +inf)`` (wrong only for ``s = +inf``, which
    :func:`_prepare` sends to the exact per-γ path).
    """
    s = stats.seen_max
    seen_first = stats.seen_arg < stats.unseen_arg
    return torch.where(seen_first, torch.nextafter(s, torch.full_like(s, float("inf"))), s)


def _collapse_candidates(stats: PixelStatistics, gs: list[torch.Tensor]) -> torch.Tensor:
    """Pixel ids where adding some γ might round the two largest unseen logits together.

    If ``b < u`` and ``fl(b + g) == fl(u + g) = f`` then ``u - b <= ulp(f) <= eps*(|u| + |g|)
    + tiny``; the test below (in float64, with a factor 8 margin) keeps a superset.
    """
    finfo = torch.finfo(stats.unseen_max.dtype)
    u, b = stats.unseen_max.double(), stats.unseen_below_max.double()
    g_max = max(abs(float(g)) for g in gs)
    bound = (u.abs() + g_max) * (8 * finfo.eps) + 8 * finfo.tiny
    return ((b < u) & (u - b <= bound)).nonzero()[:, 0]


def _rounding_collapse(stats: PixelStatistics, g: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(P_idx,)`` bool: adding ``g`` makes a smaller unseen logit equal the biased maximum."""
    below, top = stats.unseen_below_max[idx], stats.unseen_max[idx]
    return (below < top) & (below + g == top + g)


def _prepare(
    logits: torch.Tensor, unseen_mask: torch.Tensor, gammas: Sequence[float]
) -> tuple[torch.Tensor, PixelStatistics, list[torch.Tensor], torch.Tensor]:
    """Flattens, checks for NaN and returns ``(z, stats, gamma tensors, slow-pixel mask)``.

    Slow pixels (rounding collapse for some γ, or a ``+inf`` seen logit) are predicted with
    the reference argmax per γ.
    """
    z = _class_dim_first(logits, unseen_mask)
    if len(gammas) == 0:
        raise ValueError("the gamma list is empty")
    stats = pixel_statistics(z, unseen_mask)
    gs = [_gamma_tensor(g, z) for g in gammas]
    slow = stats.seen_max == float("inf")
    candidates = _collapse_candidates(stats, gs)
    if len(candidates):
        collapse = torch.zeros(len(candidates), dtype=torch.bool, device=z.device)
        for g in gs:
            collapse |= _rounding_collapse(stats, g, candidates)
        slow[candidates[collapse]] = True
    return z, stats, gs, slow


def _ground_truth(
    gt: ArrayLike, logits: torch.Tensor, ignore: int, source: str | None
) -> torch.Tensor:
    """Checked ground truth as ``(P,)`` long on the logits' device."""
    if isinstance(gt, np.ndarray) and gt.dtype == np.uint16:
        gt = gt.astype(np.int32)  # 16-bit labels (459 / 847 classes): torch has few uint16 ops
    elif isinstance(gt, np.ndarray) and not gt.flags.writeable:
        gt = gt.copy()  # e.g. np.asarray(PIL image); torch warns on read-only buffers
    gt = torch.as_tensor(gt, device=logits.device)  # not the default device
    expected = logits.shape[:-3] + logits.shape[-2:]
    if gt.shape != expected:
        where = f" in {source}" if source else ""
        raise ValueError(
            f"ground-truth shape {tuple(gt.shape)} != prediction shape {tuple(expected)}{where}"
        )
    # checked in its own (often uint8) dtype: cheaper than on int64
    check_class_ids(gt, logits.shape[-3], what="ground truth", ignore=ignore, source=source)
    return gt.reshape(-1).long()


def _seen_counts(stats: PixelStatistics, gs: list[torch.Tensor]) -> torch.Tensor:
    """``(P,)`` long ``k``: for how many γ the seen class wins (the smallest ``k``, by
    monotonicity); float accumulation of ``<`` is the fastest vectorised form on CPU."""
    threshold = _seen_threshold(stats)
    biased = torch.empty_like(stats.unseen_max)
    wins = torch.empty(threshold.shape, dtype=torch.float32, device=threshold.device)
    k = torch.zeros(threshold.shape, dtype=torch.float32, device=threshold.device)
    for g in gs:
        torch.add(stats.unseen_max, g, out=biased)
        k += torch.lt(biased, threshold, out=wins)
    return k.long()


def sweep_confusion(
    logits: torch.Tensor,
    gt: ArrayLike,
    unseen_mask: torch.Tensor,
    gammas: Sequence[float],
    ignore: int = 255,
    *,
    source: str | None = None,
) -> torch.Tensor:
    """One confusion matrix per γ, equal to ``confusion_matrix(biased_argmax(logits, γ), gt)``.

    Args:
        logits: ``(N, H, W)`` or ``(B, N, H, W)`` unbiased logits, on any device.
        gt: ``(H, W)`` or ``(B, H, W)`` integer ground truth (ids in ``[0, N)`` or ``ignore``).
        unseen_mask: ``(N,)`` bool, True for unseen classes.
        gammas: ``G`` bias values, any order (duplicates allowed).
        ignore: ground-truth value that is not counted.
        source: optional file name quoted in error messages.

    Returns:
        ``(G, N, N)`` int64 on the logits' device; rows = ground truth, columns = prediction.
    """
    n = logits.shape[-3]
    gt_flat = _ground_truth(gt, logits, ignore, source)
    z, stats, gs, slow = _prepare(logits, unseen_mask, gammas)
    order = sorted(range(len(gs)), key=lambda i: float(gammas[i]))
    # k = number of (sorted) γ for which the seen class still wins; monotone in γ.
    k = _seen_counts(stats, gs)
    valid = gt_flat != ignore
    num_g, nn = len(gs), n * n
    dump = (num_g + 1) * nn  # key of ignore and slow pixels: counted past the kept bins
    base = torch.where(valid, k * nn + gt_flat * n, dump)  # (P,)
    slow_idx = slow.nonzero()[:, 0]
    if len(slow_idx):
        base[slow_idx] = dump
    # Sentinel ids (N) occur only for an empty class set, where they are never used (k == 0 or
    # k == G); clamped so their keys stay inside the pixel's own row (real ids are < N).
    seen_cum, unseen_cum = (
        torch.bincount(base + arg.clamp(max=n - 1), minlength=dump + n)[:dump].view(num_g + 1, n, n)
        for arg in (stats.seen_arg, stats.unseen_arg)
    )
    for j in range(1, num_g + 1):  # in place: [j] = pixels with k <= j (faster than cumsum)
        seen_cum[j] += seen_cum[j - 1]
        unseen_cum[j] += unseen_cum[j - 1]
    # sorted γ j: the seen class is predicted where k > j, the unseen one where k <= j
    conf_sorted = (seen_cum[-1] - seen_cum[:-1]) + unseen_cum[:-1]  # (G, N, N)
    conf = torch.empty_like(conf_sorted)
    conf[order] = conf_sorted
    slow_valid = slow_idx[valid[slow_idx]]
    if len(slow_valid):
        conf += _slow_confusion(z, gt_flat, unseen_mask, gs, slow_valid)
    return conf


def _slow_confusion(
    z: torch.Tensor,
    gt_flat: torch.Tensor,
    unseen_mask: torch.Tensor,
    gs: list[torch.Tensor],
    idx: torch.Tensor,
) -> torch.Tensor:
    """Reference per-γ confusion over the pixels ``idx`` of ``z`` ``(N, P)``: ``(G, N, N)``."""
    n = z.shape[0]
    zs, gts = z.index_select(1, idx)[:, None], gt_flat[idx]  # (N, 1, P_slow), (P_slow,)
    out = []
    for g in gs:
        pred = biased_argmax(zs, unseen_mask, float(g))[0]  # (P_slow,)
        out.append(torch.bincount(gts * n + pred, minlength=n * n).view(n, n))
    return torch.stack(out)


class GammaSweepAccumulator:
    """Accumulates one ``(N, N)`` confusion matrix per γ over images, on the logits' device.

    Args:
        num_classes: ``N``.
        unseen_ids: unseen class indices (γ is added to their logits).
        gammas: ``G`` bias values.
        ignore: ground-truth value that is not counted.
    """

    def __init__(
        self, num_classes: int, unseen_ids: Sequence[int], gammas: Sequence[float], ignore: int
    ) -> None:
        self.num_classes = num_classes
        self.gammas = [float(g) for g in gammas]
        self.ignore = ignore
        self.unseen_mask = unseen_class_mask(num_classes, unseen_ids)
        self.reset()

    def reset(self) -> None:
        """Forgets every image."""
        self.conf: torch.Tensor | None = None  # (G, N, N), created on the first image's device
        self.num_images = 0

    def update(self, logits: torch.Tensor, gt: ArrayLike, source: str | None = None) -> None:
        """Adds one image ``(N, H, W)`` (or a batch ``(B, N, H, W)``) with its ground truth."""
        if logits.shape[-3] != self.num_classes:
            where = f" for {source}" if source else ""
            raise ValueError(
                f"logits have {logits.shape[-3]} classes, the dataset has {self.num_classes}{where}"
            )
        conf = sweep_confusion(
            logits, gt, self.unseen_mask, self.gammas, self.ignore, source=source
        )
        self.conf = conf if self.conf is None else self.conf + conf.to(self.conf.device)
        self.num_images += 1 if logits.dim() == 3 else logits.shape[0]
