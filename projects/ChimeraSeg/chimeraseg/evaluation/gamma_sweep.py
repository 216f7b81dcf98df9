"""Unseen-logit bias (γ) applied to many values in one pass, one confusion matrix per γ.

Inductive zero-shot inference adds γ to the logits of the unseen classes before the argmax
(SPEC §2). The reference semantics for one γ is :func:`biased_argmax`:
``argmax_c (z_c + γ·[c unseen])`` computed in the logits' dtype, ties going to the lowest class
index (``torch.argmax`` returns the first maximum).

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from chimeraseg.evaluation.metrics import ArrayLike, check_class_ids

__all__ = [
    "unseen_class_mask",
    "biased_argmax",
    "sweep_predictions",
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


@dataclass
class _PixelStatistics:
    """Per-pixel best seen / unseen class, all ``(P,)``; index ``N`` marks an empty set."""

    seen_max: torch.Tensor
    seen_arg: torch.Tensor
    unseen_max: torch.Tensor
    unseen_arg: torch.Tensor
    unseen_below_max: torch.Tensor  # largest unseen logit strictly below unseen_max, else -inf


# Pixels per chunk of the CPU arg-max: (N, 8192) float32 blocks stay in cache for N ~ 171.
_CPU_CHUNK = 8192


def _first_max(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over dim 0 of ``z`` ``(C, P)`` and the FIRST index attaining it, both ``(P,)``.

    Same result as ``torch.argmax`` (first maximum). On CPU, ``argmax`` over dim 0 is several
    times slower than ``amax``, so the index is found from ``amax`` instead: the largest
    ``C - c`` over the classes ``c`` equal to the maximum. Columns holding NaN get index ``C``;
    callers reject NaN first.
    """
    if z.device.type != "cpu":
        idx = z.argmax(dim=0)
        return z.gather(0, idx[None])[0], idx
    c, p = z.shape
    rev_dtype = torch.uint8 if c <= 255 else torch.int16 if c <= 32767 else torch.int32
    rev = torch.arange(c, 0, -1, dtype=rev_dtype)[:, None]  # (C, 1): C, C-1, ..., 1
    values = torch.empty(p, dtype=z.dtype)
    indices = torch.empty(p, dtype=torch.long)
    for start in range(0, p, _CPU_CHUNK):
        block = z[:, start : start + _CPU_CHUNK]  # (C, chunk)
        top = block.amax(dim=0)
        values[start : start + _CPU_CHUNK] = top
        indices[start : start + _CPU_CHUNK] = c - ((block == top) * rev).amax(dim=0).long()
    return values, indices


def _seen_best_where_unseen_leads(
    z: torch.Tensor,
    seen_ids: torch.Tensor,
    top: torch.Tensor,
    top_arg: torch.Tensor,
    unseen_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best seen value/class per pixel, reusing the all-class maximum where a seen class leads.

    Where the first all-class arg-max ``top_arg`` is seen, it is also the first seen arg-max;
    only the other pixels are rescanned over the seen rows.
    """
    s_max, s_arg = top.clone(), top_arg.clone()
    redo = unseen_mask[top_arg].nonzero()[:, 0]  # pixels led by an unseen class
    if len(redo):
        sub = z.index_select(1, redo).index_select(0, seen_ids)  # (Ns, P_redo)
        values, local = _first_max(sub)
        s_max[redo], s_arg[redo] = values, seen_ids[local]
    return s_max, s_arg


def _pixel_statistics(z: torch.Tensor, unseen_mask: torch.Tensor) -> _PixelStatistics:
    """Computes the per-pixel statistics of ``z`` ``(N, P)`` once for every γ."""
    n, p = z.shape
    mask = unseen_mask.to(z.device)
    seen_ids, unseen_ids = (~mask).nonzero()[:, 0], mask.nonzero()[:, 0]  # ascending
    top, top_arg = _first_max(z)  # (P,) over all classes
    if torch.isnan(top).any():  # max propagates NaN: one check covers every class
        raise ValueError("logits contain NaN")
    neg_inf = torch.full((p,), float("-inf"), dtype=z.dtype, device=z.device)
    sentinel = torch.full((p,), n, dtype=torch.long, device=z.device)
    if len(unseen_ids) == 0:
        return _PixelStatistics(top, top_arg, neg_inf, sentinel, neg_inf)
    zu = z.index_select(0, unseen_ids)  # (Nu, P)
    u_max, u_local = _first_max(zu)
    below = zu.masked_fill(zu == u_max, float("-inf")).amax(dim=0)  # (P,)
    if len(seen_ids) == 0:
        s_max, s_arg = neg_inf, sentinel
    else:
        s_max, s_arg = _seen_best_where_unseen_leads(z, seen_ids, top, top_arg, mask)
    return _PixelStatistics(s_max, s_arg, u_max, unseen_ids[u_local], below)


def _unseen_wins(stats: _PixelStatistics, g: torch.Tensor) -> torch.Tensor:
    """``(P,)`` bool: the best unseen class beats the best seen one under bias ``g``."""
    m = stats.unseen_max + g
    return (m > stats.seen_max) | ((m == stats.seen_max) & (stats.unseen_arg < stats.seen_arg))


def _rounding_collapse(stats: _PixelStatistics, g: torch.Tensor) -> torch.Tensor:
    """``(P,)`` bool: adding ``g`` makes a smaller unseen logit equal the biased maximum."""
    below, top = stats.unseen_below_max, stats.unseen_max
    return (below < top) & (below + g == top + g)


def _prepare(
    logits: torch.Tensor, unseen_mask: torch.Tensor, gammas: Sequence[float]
) -> tuple[torch.Tensor, _PixelStatistics, list[torch.Tensor], torch.Tensor]:
    """Flattens, checks for NaN and returns ``(z, stats, gamma tensors, slow-pixel mask)``."""
    z = _class_dim_first(logits, unseen_mask)
    if len(gammas) == 0:
        raise ValueError("the gamma list is empty")
    stats = _pixel_statistics(z, unseen_mask)
    gs = [_gamma_tensor(g, z) for g in gammas]
    slow = torch.zeros_like(stats.seen_arg, dtype=torch.bool)
    for g in gs:
        slow |= _rounding_collapse(stats, g)
    return z, stats, gs, slow


def sweep_predictions(
    logits: torch.Tensor, unseen_mask: torch.Tensor, gammas: Sequence[float]
) -> torch.Tensor:
    """Predictions for every γ, identical to :func:`biased_argmax` for each.

    Args:
        logits: ``(N, H, W)`` or ``(B, N, H, W)`` unbiased logits.
        unseen_mask: ``(N,)`` bool, True for unseen classes.
        gammas: ``G`` bias values, any order.

    Returns:
        ``(G, H, W)`` or ``(G, B, H, W)`` int64 class ids.
    """
    z, stats, gs, slow = _prepare(logits, unseen_mask, gammas)
    slow_idx = slow.nonzero()[:, 0]
    mask = unseen_mask.to(z.device, z.dtype)
    preds = []
    for g in gs:
        pred = torch.where(_unseen_wins(stats, g), stats.unseen_arg, stats.seen_arg)  # (P,)
        if len(slow_idx):
            zs = z.index_select(1, slow_idx)  # (N, P_slow)
            pred[slow_idx] = (zs + (mask * g)[:, None]).argmax(dim=0)
        preds.append(pred)
    spatial = logits.shape[:-3] + logits.shape[-2:]
    return torch.stack(preds).reshape(len(gs), *spatial)  # (G, P) -> (G, [B,] H, W)


def _ground_truth(gt: ArrayLike, logits: torch.Tensor, source: str | None) -> torch.Tensor:
    """Ground truth as ``(P,)`` long on the logits' device, after shape checks."""
    if isinstance(gt, np.ndarray) and not gt.flags.writeable:
        gt = gt.copy()  # e.g. np.asarray(PIL image); torch warns on read-only buffers
    gt = torch.as_tensor(gt).to(logits.device, non_blocking=True)
    expected = logits.shape[:-3] + logits.shape[-2:]
    if gt.shape != expected:
        where = f" in {source}" if source else ""
        raise ValueError(
            f"ground-truth shape {tuple(gt.shape)} != prediction shape {tuple(expected)}{where}"
        )
    return gt.reshape(-1).long()


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
    gt_flat = _ground_truth(gt, logits, source)
    check_class_ids(gt_flat, n, what="ground truth", ignore=ignore, source=source)
    z, stats, gs, slow = _prepare(logits, unseen_mask, gammas)
    order = sorted(range(len(gs)), key=lambda i: float(gammas[i]))
    # k = number of (sorted) γ for which the seen class still wins; monotone in γ.
    k = torch.zeros_like(stats.seen_arg)
    for i in order:
        k += ~_unseen_wins(stats, gs[i])
    valid = gt_flat != ignore
    fast = valid & ~slow
    num_g, nn = len(gs), n * n
    hist = []
    for arg in (stats.seen_arg, stats.unseen_arg):
        # Sentinel ids (N) only occur where they are never used (k == 0 or k == G): clamp them.
        keys = k[fast] * nn + gt_flat[fast] * n + arg[fast].clamp(max=n - 1)
        hist.append(torch.bincount(keys, minlength=(num_g + 1) * nn).view(num_g + 1, n, n))
    seen_hist, unseen_hist = hist  # (G+1, N, N) each, indexed by k
    seen_from = seen_hist.flip(0).cumsum(0).flip(0)  # [j] = pixels with k >= j
    unseen_upto = unseen_hist.cumsum(0)  # [j] = pixels with k <= j
    conf_sorted = seen_from[1:] + unseen_upto[:-1]  # (G, N, N): sorted γ j uses k > j / k <= j
    conf = torch.empty_like(conf_sorted)
    conf[order] = conf_sorted
    slow_valid = (slow & valid).nonzero()[:, 0]
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
    zs, gts = z.index_select(1, idx), gt_flat[idx]  # (N, P_slow), (P_slow,)
    mask = unseen_mask.to(z.device, z.dtype)
    out = []
    for g in gs:
        pred = (zs + (mask * g)[:, None]).argmax(dim=0)
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
