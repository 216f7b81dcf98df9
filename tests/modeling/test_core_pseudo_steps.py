"""The pseudo-mask steps one by one against hand computations (seeds, K-Means, merge, areas)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chimeraseg.modeling.pseudo_masks import (
    _assign_surviving,
    _greedy_merge,
    _kmeans,
    _window_seeds,
)


def _unit(*values: float) -> torch.Tensor:
    return F.normalize(torch.tensor(values), dim=0)


def test_window_seeds_are_masked_window_means_with_half_stride() -> None:
    """On a 6x2 grid, scale 4 clips to 4x2 windows with stride (2, 1): two seeds, each the unit
    mean of the window's region cells, valid when more than half of the window is region."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 3, 6, 2, generator=g)
    region = torch.ones(1, 6, 2, dtype=torch.bool)
    region[0, 0] = False  # window rows 0-3: 6 of 8 cells region
    region[0, 4:] = False  # window rows 2-5: 4 of 8 cells region
    seeds, valid = _window_seeds(feats, region, scale=4, min_fraction=0.5)
    expected = []
    for top in (0, 2):
        cells = [
            feats[0, :, r, c] for r in range(top, top + 4) for c in range(2) if region[0, r, c]
        ]
        expected.append(F.normalize(torch.stack(cells).sum(dim=0), dim=0))
    assert seeds.shape == (1, 2, 3)
    torch.testing.assert_close(seeds[0], torch.stack(expected))
    assert valid.tolist() == [[True, False]]  # 6/8 > 0.5, 4/8 is not


def test_kmeans_empty_cluster_keeps_its_seed() -> None:
    """A duplicate seed loses every tie, stays empty and keeps its seed, so the point opposite
    to the other centroid (cosine -1) still joins that centroid rather than a zero vector."""
    e0 = _unit(1.0, 0.0)
    points = torch.stack([e0, e0, e0, -e0])[None]  # (1, 4, 2)
    seeds = torch.stack([e0, e0])[None]
    mask = torch.ones(1, 4, dtype=torch.bool)
    valid = torch.ones(1, 2, dtype=torch.bool)
    centroids, counts = _kmeans(points, mask, seeds, valid, iters=2)
    assert counts.tolist() == [[4.0, 0.0]]
    torch.testing.assert_close(centroids[0], torch.stack([e0, e0]))  # (3 e0 - e0) / |.| = e0


def test_kmeans_single_point_cluster_moves_onto_its_point() -> None:
    """One update step moves each seed onto the normalised sum of its points, also when a
    cluster holds a single point; masked points and invalid seeds take no part."""
    e0, e1 = _unit(1.0, 0.0), _unit(0.0, 1.0)
    points = torch.stack([e0, e1, e1])[None]  # the last point is masked out
    seeds = torch.stack([_unit(1.0, 0.2), _unit(0.3, 1.0), e1])[None]
    mask = torch.tensor([[True, True, False]])
    valid = torch.tensor([[True, True, False]])  # the exact e1 seed is unusable
    centroids, counts = _kmeans(points, mask, seeds, valid, iters=1)
    assert counts.tolist() == [[1.0, 1.0, 0.0]]
    torch.testing.assert_close(centroids[0, :2], torch.stack([e0, e1]))


def test_greedy_merge_leaders_and_weighted_group_centroids() -> None:
    """Largest cluster leads; clusters strictly above the threshold join it; empty clusters form
    no group; a group centroid is the count-weighted mean of its members, normalised."""
    e0, e1 = _unit(1.0, 0.0), _unit(0.0, 1.0)
    near = _unit(1.0, 0.1)  # cosine 0.995 with e0, 0.0995 with e1
    centroids = torch.stack([e0, e1, near, -e1])[None]
    counts = torch.tensor([[3.0, 5.0, 2.0, 0.0]])
    groups, valid = _greedy_merge(centroids, counts, threshold=0.9)
    expected = torch.stack([e1, F.normalize(3 * e0 + 2 * near, dim=0)])
    torch.testing.assert_close(groups[0], expected)
    assert valid.tolist() == [[True, True]]
    groups, valid = _greedy_merge(centroids, counts, threshold=0.0)  # cos(e0, e1) = 0 exactly
    expected = torch.stack([F.normalize(5 * e1 + 2 * near, dim=0), e0])
    torch.testing.assert_close(groups[0], expected)
    assert valid.tolist() == [[True, True]]


def test_greedy_merge_validity_is_per_image() -> None:
    """Group numbers are shared by the batch: image 0 makes two groups, image 1 one, so image 1
    has no member in group 1, which is therefore invalid there (its centroid is the zero
    vector, cosine 0 with every cell, and would take cells whose real groups are all negative)."""
    e0, e1 = _unit(1.0, 0.0), _unit(0.0, 1.0)
    centroids = torch.stack([torch.stack([e0, e1]), torch.stack([e0, e1])])  # (2, 2, 2)
    counts = torch.tensor([[3.0, 2.0], [3.0, 0.0]])
    groups, valid = _greedy_merge(centroids, counts, threshold=0.9)
    assert valid.tolist() == [[True, True], [True, False]]
    torch.testing.assert_close(groups[0], torch.stack([e0, e1]))
    torch.testing.assert_close(groups[1], torch.stack([e0, torch.zeros(2)]))


def test_greedy_merge_without_clusters_gives_no_groups() -> None:
    """No non-empty cluster: zero groups, shaped ``(B, 0, D)`` and ``(B, 0)``."""
    groups, valid = _greedy_merge(torch.randn(2, 3, 5), torch.zeros(2, 3), threshold=0.9)
    assert groups.shape == (2, 0, 5) and valid.shape == (2, 0) and valid.dtype == torch.bool


def _sim(nearest: list[int], num_groups: int) -> torch.Tensor:
    """``(N, G)`` cosines: 1 to the listed group, 0.5 to the others."""
    sim = torch.full((len(nearest), num_groups), 0.5)
    sim[torch.arange(len(nearest)), torch.tensor(nearest)] = 1.0
    return sim


def test_assign_surviving_drops_a_small_group_and_keeps_one_of_exactly_min_area() -> None:
    """Areas 5 and 2 with ``min_area`` 4: the 2 cells move to the other group; areas 4 and 5
    both survive (4 is not below 4)."""
    mask = torch.ones(1, 7, dtype=torch.bool)
    sim = _sim([0, 0, 1, 0, 0, 1, 0], 2)[None]
    assign, area, keep = _assign_surviving(sim, mask, torch.ones(1, 2, dtype=torch.bool), 4)
    assert assign.tolist() == [[0] * 7] and area.tolist() == [[7, 0]]
    assert keep.tolist() == [[True, False]]
    mask = torch.ones(1, 9, dtype=torch.bool)
    sim = _sim([0, 1, 0, 1, 0, 1, 0, 1, 1], 2)[None]
    assign, area, keep = _assign_surviving(sim, mask, torch.ones(1, 2, dtype=torch.bool), 4)
    assert area.tolist() == [[4, 5]] and keep.tolist() == [[True, True]]


def test_assign_surviving_decides_per_image() -> None:
    """Image 0 has a single alive group (index 1) below ``min_area``: it is not dropped (there is
    no other group to take its cells), just not kept. Image 1 has groups of 5 and 4 cells, none
    too small: nothing moves there although image 0 has a small group."""
    sim0 = torch.cat([_sim([1, 1], 2), torch.zeros(7, 2)])  # image 0: 2 region cells
    sim1 = _sim([0, 1, 0, 1, 0, 1, 0, 1, 0], 2)
    mask = torch.tensor([[True] * 2 + [False] * 7, [True] * 9])
    valid = torch.tensor([[False, True], [True, True]])
    assign, area, keep = _assign_surviving(torch.stack([sim0, sim1]), mask, valid, 4)
    assert area.tolist() == [[0, 2], [5, 4]]
    assert assign[0, :2].tolist() == [1, 1] and assign[1].tolist() == [0, 1] * 4 + [0]
    assert keep.tolist() == [[False, False], [True, True]]
