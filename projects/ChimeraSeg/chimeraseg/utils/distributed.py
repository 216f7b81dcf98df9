"""Minimal ``torch.distributed`` helpers that work with or without an initialised process group.

These replace detectron2's ``comm`` inside the plain-PyTorch core so that the core never imports
detectron2. Every function is a no-op (identity) in a single process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Returns True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    """Returns the number of processes (1 without an initialised process group)."""
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    """Returns this process's global rank (0 without an initialised process group)."""
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def all_gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenates ``tensor`` from every process along dim 0, in rank order, without gradient.

    Processes may hold different numbers of rows; the rows are padded for the collective and the
    padding is removed afterwards.

    Args:
        tensor: ``(n_i, ...)`` local rows; all processes must agree on the trailing shape and dtype.

    Returns:
        ``(rows, offset)``: ``rows`` is ``(sum_i n_i, ...)``, rank 0 first, and ``offset`` is the
        index of this process's first row in it. In a single process: ``(tensor.detach(), 0)``.
    """
    if not is_distributed():
        return tensor.detach(), 0
    world = dist.get_world_size()
    local_n = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(local_n) for _ in range(world)]
    dist.all_gather(sizes, local_n)
    counts = torch.cat(sizes).tolist()  # one read of the device for every process's row count
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    rows = torch.cat([g[:n] for g, n in zip(gathered, counts)], dim=0)
    return rows, sum(counts[: dist.get_rank()])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sums ``tensor`` over all processes in place and returns it (identity in one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_count_per_process(count: int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum of ``count`` over all processes divided by the world size (``count`` alone in one).

    A loss summed over its local items and divided by this, then averaged over processes by DDP,
    is the mean over every process's items. Mask2Former normalises its mask losses by the same
    all-reduced count but clamps it to at least 1; this does not, because the clamp would bias a
    world holding fewer items than processes. The result stays on the device (no host read).

    Args:
        count: number of items on this process (a Python int or a 0-dim tensor).
        device: device of the collective's tensor (the process group's backend must support it).

    Returns:
        ``()`` float64 tensor on ``device``.
    """
    total = torch.as_tensor(count, device=device).to(torch.float64).reshape(1)
    if not is_distributed():
        return total[0]
    return all_reduce_sum(total.clone())[0] / dist.get_world_size()
