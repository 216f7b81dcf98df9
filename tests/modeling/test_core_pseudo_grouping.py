"""The batched grouping rules equal the plain sequential ones they replaced, chunk by chunk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import chimeraseg.modeling.pseudo_grouping as grouping
from chimeraseg.modeling.pseudo_grouping import assign_surviving, greedy_merge
from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig, generate_pseudo_masks


def _sequential_merge(
    centroids: torch.Tensor, counts: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy merge as a loop: one leader per image and round, until none is left."""
    b, k, _ = centroids.shape
    sim = centroids @ centroids.transpose(1, 2)
    unassigned = counts > 0
    group_of = torch.full((b, k), -1, dtype=torch.long)
    rows = torch.arange(b)
    num_groups = 0
    while bool(unassigned.any()):
        key = torch.where(unassigned, counts, torch.full_like(counts, -1.0))
        leader = key.argmax(dim=1)
        members = unassigned & (sim[rows, leader] > threshold)
        members[rows, leader] = unassigned[rows, leader]
        group_of[members] = num_groups
        unassigned &= ~members
        num_groups += 1
    if num_groups == 0:
        return centroids.new_zeros(b, 0, centroids.shape[-1]), counts.new_zeros(b, 0).bool()
    member = F.one_hot(group_of.clamp_min(0), num_groups).to(centroids.dtype)
    member = member * (group_of >= 0)[..., None] * counts[..., None]
    return F.normalize(member.transpose(1, 2) @ centroids, dim=-1), member.sum(dim=1) > 0


def _sequential_surviving(
    sim: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, min_area: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The minimum-area rule as a loop: drop one smallest group per image and pass."""
    alive = valid.clone()
    while True:
        assign = sim.masked_fill(~alive[:, None], float("-inf")).argmax(dim=-1)
        area = (F.one_hot(assign, sim.shape[-1]) * mask[..., None]).sum(dim=1)
        alive &= area > 0
        todo = (alive.sum(dim=1) > 1) & (alive & (area < min_area)).any(dim=1)
        if not bool(todo.any()):
            return assign, area, alive & (area >= min_area)
        key = torch.where(alive, area, torch.full_like(area, torch.iinfo(area.dtype).max))
        smallest = key.argmin(dim=1)
        rows = torch.nonzero(todo).squeeze(1)
        alive[rows, smallest[rows]] = False


def _clusters(seed: int, b: int = 3, k: int = 60, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit centroids near a few directions (chains of merges) and sizes with ties and zeros."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(b, 4, d, generator=gen)
    pick = torch.randint(0, 4, (b, k), generator=gen)
    noise = 0.4 * torch.randn(b, k, d, generator=gen)
    centroids = F.normalize(directions.gather(1, pick[..., None].expand(-1, -1, d)) + noise, dim=-1)
    counts = torch.randint(0, 6, (b, k), generator=gen).float()  # zeros: empty clusters
    return centroids, counts


@pytest.mark.parametrize("rounds", [1, 2, 16])
@pytest.mark.parametrize("threshold", [0.3, 0.8, 0.95])
def test_merge_equals_the_sequential_loop(monkeypatch, rounds: int, threshold: float) -> None:
    monkeypatch.setattr(grouping, "MERGE_ROUNDS", rounds)  # 1: many chunks, doubling
    for seed in range(4):
        centroids, counts = _clusters(seed)
        groups, valid = greedy_merge(centroids, counts, threshold)
        expected_groups, expected_valid = _sequential_merge(centroids, counts, threshold)
        assert torch.equal(valid, expected_valid)
        assert torch.equal(groups, expected_groups)
        assert valid.sum(dim=1).max() > 1  # several groups: the order mattered


@pytest.mark.parametrize("steps", [1, 3, 32])
@pytest.mark.parametrize("min_area", [2, 5, 12])
def test_minimum_area_rule_equals_the_sequential_loop(monkeypatch, steps, min_area) -> None:
    monkeypatch.setattr(grouping, "SURVIVAL_STEPS", steps)
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        sim = torch.randn(3, 80, 25, generator=gen)
        mask = torch.rand(3, 80, generator=gen) > 0.3
        valid = torch.rand(3, 25, generator=gen) > 0.2
        got = assign_surviving(sim, mask, valid, min_area)
        expected = _sequential_surviving(sim, mask, valid, min_area)
        for a, e in zip(got, expected):
            assert torch.equal(a, e)
        assert expected[2].any()  # some group survives


def test_pseudo_masks_do_not_depend_on_the_chunk_lengths(monkeypatch) -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 8, 16, 16, generator=gen)
    labels = torch.randint(0, 3, (2, 256, 256), generator=gen)
    labels[:, :, 64:] = 255
    config = PseudoMaskConfig(scales=(2, 4))
    reference = generate_pseudo_masks(labels, feats, num_seen=3, config=config)
    monkeypatch.setattr(grouping, "MERGE_ROUNDS", 1)
    monkeypatch.setattr(grouping, "SURVIVAL_STEPS", 1)
    chunked = generate_pseudo_masks(labels, feats, num_seen=3, config=config)
    assert torch.equal(chunked.labels, reference.labels)
    assert reference.num_latent.min() > 1
