"""Grouping steps of the pseudo masks: greedy merging of clusters and the small-group rule.

Both rules are sequential by definition (a leader absorbs clusters before the next leader is
chosen; the smallest group is dropped before the next smallest is known). They run here as
batched tensor code with fixed shapes, so the host does not wait for the device inside the
loops: iterations run in chunks of a fixed length without looking at the data (an iteration after
convergence changes nothing), and one scalar read per chunk decides whether another chunk is
needed. One chunk covers common inputs, so a batch usually costs one read per rule (the merge's
also gives the number of groups, the width of the group tensors). The results are those of the
plain sequential rules (tests/modeling/test_core_pseudo_steps.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MERGE_ROUNDS", "SURVIVAL_STEPS", "greedy_merge", "assign_surviving"]

# Iterations between two convergence reads (then doubled each time); see the module docstring.
MERGE_ROUNDS = 16
SURVIVAL_STEPS = 32


def greedy_merge(
    centroids: torch.Tensor, counts: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy leader merging: the largest unmerged cluster absorbs every unmerged cluster whose
    centroid cosine with it exceeds ``threshold``; repeat. Group centroid = size-weighted mean.

    In the order "largest first, ties by index", a non-empty cluster is a leader exactly when no
    earlier leader absorbs it, and it joins the first leader that does. Rounds decide, all at
    once, every cluster whose earlier absorbers are all decided.

    Args:
        centroids: ``(B, K, D)`` unit cluster centroids.
        counts: ``(B, K)`` cluster sizes (0 = empty cluster, never grouped).
        threshold: cosine above which a leader absorbs a cluster.

    Returns:
        ``(B, G, D)`` unit group centroids (group ``g`` of an image = its ``g``-th leader) and
        ``(B, G)`` validity, ``G`` = the largest number of groups of an image.
    """
    b, k, _ = centroids.shape
    sim = centroids @ centroids.transpose(1, 2)  # (B, K, K), row = absorbing leader
    valid = counts > 0
    order = torch.where(valid, counts, torch.full_like(counts, -1.0)).argsort(
        dim=1, descending=True, stable=True
    )  # (B, K) largest first, ties by index
    positions = torch.arange(k, device=order.device).expand(b, -1)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # (B, K) position in order
    earlier = rank[:, :, None] < rank[:, None, :]  # (B, K, K): l before j
    absorbs = (sim > threshold) & earlier & valid[:, :, None] & valid[:, None, :]
    leader = torch.zeros_like(valid)
    absorbed = torch.zeros_like(valid)
    rounds = MERGE_ROUNDS
    while True:
        for _ in range(rounds):
            by_leader = (absorbs & leader[:, :, None]).any(dim=1)  # (B, K) an earlier leader
            undecided_before = (absorbs & ~absorbed[:, :, None]).any(dim=1)
            absorbed = valid & by_leader
            leader = valid & ~undecided_before
        decided = leader | absorbed | ~valid
        # One read: the number of groups, or -1 while some cluster is undecided.
        num_groups = int(torch.where(decided.all(), leader.sum(dim=1).max(), -1))
        if num_groups >= 0:
            break
        rounds *= 2
    if num_groups == 0:
        return centroids.new_zeros(b, 0, centroids.shape[-1]), counts.new_zeros(b, 0).bool()
    leader_index = leader.gather(1, order).long().cumsum(dim=1).gather(1, rank) - 1  # (B, K)
    # Each absorbed cluster joins its first (lowest-rank) absorbing leader.
    absorber_rank = torch.where(absorbs & leader[:, :, None], rank[:, :, None], k)  # (B, K, K)
    first = order.gather(1, absorber_rank.amin(dim=1).clamp_max(k - 1))  # (B, K) its leader
    group_of = torch.where(leader, leader_index, leader_index.gather(1, first))
    group_of = torch.where(valid, group_of, -1)  # (B, K) group per cluster, -1 = empty
    member = F.one_hot(group_of.clamp_min(0), num_groups).to(centroids.dtype)  # (B, K, G)
    member = member * (group_of >= 0)[..., None] * counts[..., None]  # size weights
    groups = F.normalize(member.transpose(1, 2) @ centroids, dim=-1)  # (B, G, D)
    return groups, member.sum(dim=1) > 0


def assign_surviving(
    sim: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, min_area: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest-group assignment in which every group keeps at least ``min_area`` cells.

    Assigns every region cell to its nearest alive group; while an image has more than one
    alive group and one of them is below ``min_area``, drops its smallest group (the first of
    equal ones; groups without cells all at once, which moves no cell) and reassigns. The last
    group survives if it has ``min_area`` cells. So a cluster too small to survive never captures
    cells: they join the nearest surviving group instead of staying ignored (with window scale 2,
    stride 1, K-Means leaves many near-single-cell clusters), and a region of at least
    ``min_area`` cells always keeps a group, however small its clusters.

    Args:
        sim: ``(B, N, G)`` cosine of every cell with every group centroid.
        mask: ``(B, N)`` bool, region cells.
        valid: ``(B, G)`` bool, non-empty groups.
        min_area: minimum cells of a surviving group (>= 1).

    Returns:
        ``(B, N)`` nearest surviving group of every cell (meaningless where no group survives),
        ``(B, G)`` areas (region cells per group) and ``(B, G)`` bool surviving groups.
    """
    groups = torch.arange(sim.shape[-1], device=sim.device)  # (G,)
    alive = valid.clone()
    steps = SURVIVAL_STEPS
    while True:
        for _ in range(steps):
            assign = sim.masked_fill(~alive[:, None], float("-inf")).argmax(dim=-1)  # (B, N)
            onehot = (assign[..., None] == groups) & mask[..., None]  # (B, N, G)
            area = onehot.sum(dim=1)  # (B, G) cells per group
            alive &= area > 0  # empty groups: dropping them moves no cell
            small = alive & (area < min_area)
            several = alive.sum(dim=1) > 1  # (B,)
            todo = several & small.any(dim=1)  # (B,) images that drop their smallest group
            key = torch.where(alive, area, torch.full_like(area, torch.iinfo(area.dtype).max))
            smallest = key.argmin(dim=1)  # (B,) first smallest alive group
            alive &= ~(todo[:, None] & (groups == smallest[:, None]))
        if not bool(todo.any()):
            return assign, area, alive & (area >= min_area)
        steps *= 2
