"""Best seen and best unseen class of every pixel, computed once for every γ of a sweep.

``argmax`` over the class dimension of ``(N, H*W)`` logits is slow on CPU, so there the statistics
come from one streaming pass over the class rows with vectorised float ops (running maxima, strict
``>`` for first-max ties, as ``torch.argmax``); accelerators use ``torch.max(dim=0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PixelStatistics", "pixel_statistics"]


@dataclass
class PixelStatistics:
    """Per-pixel best seen / unseen class, all ``(P,)``; index ``N`` marks an empty set."""

    seen_max: torch.Tensor
    seen_arg: torch.Tensor
    unseen_max: torch.Tensor
    unseen_arg: torch.Tensor
    unseen_below_max: torch.Tensor  # largest unseen logit strictly below unseen_max, else -inf


# Pixels per block of the CPU class scan (the running state of one block stays in cache).
_CPU_BLOCK = 1 << 18
# Below this many pixels the per-class Python loop costs more than ``torch.max(dim=0)``.
_CPU_SCAN_MIN_PIXELS = 8192


class _RunningMax:
    """First maximum over rows fed in ascending class order; ``(p,)`` state, float only.

    ``z_c > best`` (strict) moves the maximum, so ties keep the lower class, as
    ``torch.argmax`` does. The class index is kept as a float (exact below 2**24) and updated
    as ``max(index, c * [z_c > best])``, valid because ``c`` exceeds every earlier index:
    on CPU these vectorised float ops are several times faster than ``masked_fill`` or
    ``where`` with a bool mask. ``torch.maximum`` propagates NaN, so NaN rows leave NaN.
    """

    def __init__(self, row: torch.Tensor, class_id: int) -> None:
        self.value = row.clone()
        self.index = torch.full(row.shape, float(class_id), dtype=torch.float32)
        self._moved = torch.empty(row.shape, dtype=torch.float32)

    def add(self, row: torch.Tensor, class_id: int) -> None:
        """Feeds the ``(p,)`` logits of class ``class_id``."""
        torch.gt(row, self.value, out=self._moved)  # 1.0 where the class takes the lead
        torch.maximum(self.value, row, out=self.value)
        torch.maximum(self.index, self._moved.mul_(class_id), out=self.index)


def _scan_block(
    rows: torch.Tensor, seen_ids: list[int], unseen_ids: list[int]
) -> tuple[_RunningMax | None, _RunningMax | None, torch.Tensor | None]:
    """One pass over ``rows`` ``(N, p)``: first maxima over the seen and the unseen classes,
    and the second largest unseen value counted with multiplicity (``-inf`` if none).
    """
    seen = _RunningMax(rows[seen_ids[0]], seen_ids[0]) if seen_ids else None
    for c in seen_ids[1:]:
        seen.add(rows[c], c)
    if not unseen_ids:
        return seen, None, None
    unseen = _RunningMax(rows[unseen_ids[0]], unseen_ids[0])
    second = torch.full_like(unseen.value, float("-inf"))
    for c in unseen_ids[1:]:
        row = rows[c]
        torch.maximum(second, torch.minimum(row, unseen.value), out=second)
        unseen.add(row, c)
    return seen, unseen, second


def _strictly_below(
    z: torch.Tensor, unseen_ids: list[int], top: torch.Tensor, second: torch.Tensor
) -> torch.Tensor:
    """Largest unseen value strictly below ``top``, from the multiset second maximum.

    They differ only where the unseen maximum occurs twice (``second == top``); those pixels
    (rare with real logits) are recomputed exactly.
    """
    dup = ((second == top) & (top > float("-inf"))).nonzero()[:, 0]
    if len(dup):
        sub = z.index_select(0, torch.tensor(unseen_ids)).index_select(1, dup)  # (Nu, P_dup)
        second = second.clone()
        second[dup] = sub.masked_fill(sub == top[dup], float("-inf")).amax(dim=0)
    return second


def _pixel_statistics_cpu(z: torch.Tensor, unseen_mask: torch.Tensor) -> PixelStatistics:
    """Per-pixel statistics on CPU: one streaming pass over the classes per pixel block.

    ``argmax`` over the class dimension of a ``(N, P)`` tensor is slow on CPU; feeding the
    classes one row at a time into running maxima reads every logit once with vectorised
    element-wise ops instead.
    """
    n, p = z.shape
    seen_ids = (~unseen_mask).nonzero()[:, 0].tolist()  # ascending
    unseen_ids = unseen_mask.nonzero()[:, 0].tolist()
    s_max, u_max, second = (torch.full((p,), float("-inf"), dtype=z.dtype) for _ in range(3))
    s_arg, u_arg = (torch.full((p,), float(n)) for _ in range(2))  # n marks an empty set
    for start in range(0, p, _CPU_BLOCK):
        part = slice(start, start + _CPU_BLOCK)
        seen, unseen, sec = _scan_block(z[:, part], seen_ids, unseen_ids)  # (N, p_block)
        if p <= _CPU_BLOCK:  # one block: keep its state, no copies
            s_max, s_arg = (seen.value, seen.index) if seen is not None else (s_max, s_arg)
            if unseen is not None:
                u_max, u_arg, second = unseen.value, unseen.index, sec
            break
        if seen is not None:
            s_max[part], s_arg[part] = seen.value, seen.index
        if unseen is not None:
            u_max[part], u_arg[part], second[part] = unseen.value, unseen.index, sec
    below = _strictly_below(z, unseen_ids, u_max, second) if unseen_ids else second
    return PixelStatistics(s_max, s_arg.long(), u_max, u_arg.long(), below)


def pixel_statistics(z: torch.Tensor, unseen_mask: torch.Tensor) -> PixelStatistics:
    """Computes the per-pixel statistics of ``z`` ``(N, P)`` once for every γ."""
    mask = unseen_mask.to(z.device)
    n, p = z.shape
    if z.device.type == "cpu" and p >= _CPU_SCAN_MIN_PIXELS and n <= 2**24:  # exact float ids
        stats = _pixel_statistics_cpu(z, mask)
    else:
        stats = _pixel_statistics_generic(z, mask)
    if torch.isnan(stats.seen_max).any() or torch.isnan(stats.unseen_max).any():
        raise ValueError("logits contain NaN")  # max propagates NaN: covers every class
    return stats


def _pixel_statistics_generic(z: torch.Tensor, mask: torch.Tensor) -> PixelStatistics:
    """Per-pixel statistics with whole-tensor reductions (accelerators: argmax is fast there)."""
    n, p = z.shape
    seen_ids, unseen_ids = (~mask).nonzero()[:, 0], mask.nonzero()[:, 0]  # ascending
    neg_inf = torch.full((p,), float("-inf"), dtype=z.dtype, device=z.device)
    sentinel = torch.full((p,), n, dtype=torch.long, device=z.device)
    if len(unseen_ids) == 0:
        s_max, s_arg = z.max(dim=0)
        return PixelStatistics(s_max, s_arg, neg_inf, sentinel, neg_inf)
    zu = z.index_select(0, unseen_ids)  # (Nu, P)
    u_max, u_local = zu.max(dim=0)
    below = zu.masked_fill(zu == u_max, float("-inf")).amax(dim=0)  # (P,)
    if len(seen_ids) == 0:
        s_max, s_arg = neg_inf, sentinel
    else:
        s_max, s_local = z.index_select(0, seen_ids).max(dim=0)
        s_arg = seen_ids[s_local]
    return PixelStatistics(s_max, s_arg, u_max, unseen_ids[u_local], below)
