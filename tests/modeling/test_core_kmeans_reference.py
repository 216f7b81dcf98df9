"""Pseudo masks against a hand-iterated spherical K-Means on a scene the seeds alone cannot split.

Two objects A (teacher columns 0-2) and B (columns 3-6) of cosine 0.8 fill the whole ignore
region of a 4x7 teacher grid. Scale 4 gives two seed windows (columns 0-3 and 2-5), and both
straddle the objects: their seeds have cosine > 0.9, so without the centroid update they merge
into one region. K-Means moves the centroids onto A and B (cosine 0.8 < 0.9): two regions.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig, generate_pseudo_masks

GRID, CELL, DIM = (4, 7), 16, 6
MERGE = 0.9


def _scene() -> torch.Tensor:
    """``(1, D, 4, 7)`` teacher features: A left of column 3, B from it, a little noise."""
    a = torch.zeros(DIM)
    a[0] = 1.0
    b = torch.zeros(DIM)
    b[0], b[1] = 0.8, 0.6  # cos(A, B) = 0.8
    feats = torch.where(torch.arange(GRID[1]) < 3, 1.0, 0.0)[None, None] * a[:, None, None]
    feats = feats + torch.where(torch.arange(GRID[1]) >= 3, 1.0, 0.0)[None, None] * b[:, None, None]
    feats = feats.expand(DIM, *GRID).clone()[None]  # (1, D, 4, 7)
    generator = torch.Generator().manual_seed(4)
    return feats + 0.03 * torch.randn(feats.shape, generator=generator)


def _hand_kmeans(feats: torch.Tensor, iters: int) -> tuple[list[list[float]], list[int]]:
    """Seeds = normalised means of the 4x4 windows at columns 0 and 2; then ``iters`` rounds of
    nearest-centroid (cosine) assignment and centroid = normalised sum of its cells, in loops."""
    rows, cols = GRID
    cells = [F.normalize(feats[0, :, r, c], dim=0) for r in range(rows) for c in range(cols)]
    col_of = [c for _ in range(rows) for c in range(cols)]
    centroids = []
    for start in (0, 2):
        members = [p for p, c in zip(cells, col_of) if start <= c < start + 4]
        centroids.append(F.normalize(sum(members), dim=0))
    assign = []
    for step in range(iters + 1):
        assign = [max(range(2), key=lambda k, p=p: float(p @ centroids[k])) for p in cells]
        if step == iters:
            break
        for k in range(2):
            members = [p for p, a in zip(cells, assign) if a == k]
            if members:
                centroids[k] = F.normalize(sum(members), dim=0)
    return [c.tolist() for c in centroids], assign


def _regions(kmeans_iters: int) -> torch.Tensor:
    labels = torch.full((1, GRID[0] * CELL, GRID[1] * CELL), 255, dtype=torch.long)
    config = PseudoMaskConfig(
        scales=(4,), kmeans_iters=kmeans_iters, merge_threshold=MERGE, min_area=1
    )
    out = generate_pseudo_masks(labels, _scene(), num_seen=2, config=config)
    assert out.latent_start == 2
    return out.labels[0, ::CELL, ::CELL] - out.latent_start  # (4, 7) region per teacher cell


def test_the_seed_windows_straddle_both_objects() -> None:
    seeds, _ = _hand_kmeans(_scene(), iters=0)
    assert float(torch.tensor(seeds[0]) @ torch.tensor(seeds[1])) > MERGE  # merge if not updated
    assert (_regions(kmeans_iters=0) == 0).all()  # so: one region without K-Means steps


@pytest.mark.parametrize("iters", [1, 3, 10])
def test_latent_regions_are_the_hand_iterated_kmeans_clusters(iters: int) -> None:
    centroids, assign = _hand_kmeans(_scene(), iters)
    assert float(torch.tensor(centroids[0]) @ torch.tensor(centroids[1])) < MERGE
    clusters = torch.tensor(assign).view(GRID)
    assert torch.equal(clusters, (torch.arange(GRID[1]) >= 3).long().expand(GRID))  # A | B
    expected = 1 - clusters  # regions are numbered largest first: B (16 cells) is region 0
    regions = _regions(iters)
    assert torch.equal(regions, expected), regions
