"""Pseudo masks and class prototypes (the paper's latent regions and their prototypes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chimeraseg.modeling.prototypes import class_prototypes, downsample_labels
from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig, generate_pseudo_masks

CFG = PseudoMaskConfig(scales=(2, 4), kmeans_iters=5, min_area=1)


def _two_object_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (1, 64, 64): seen class 3 on top half, bottom half ignore; the teacher grid
    (8x8) shows two distinct objects in the bottom-left and bottom-right quadrants."""
    labels = torch.full((1, 64, 64), 3, dtype=torch.long)
    labels[:, 32:] = 255
    a, b, c = torch.eye(16)[:3]
    dense = c.view(1, 16, 1, 1).repeat(1, 1, 8, 8)
    dense[0, :, 4:, :4] = (a + 0.05 * torch.randn(4, 4, 16)).permute(2, 0, 1)
    dense[0, :, 4:, 4:] = (b + 0.05 * torch.randn(4, 4, 16)).permute(2, 0, 1)
    return labels, dense


def test_two_latent_regions_and_seen_kept_bit_exact() -> None:
    labels, dense = _two_object_scene()
    out = generate_pseudo_masks(labels, dense, num_seen=5, config=CFG)
    assert torch.equal(out.labels[labels != 255], labels[labels != 255])
    assert out.num_latent.tolist() == [2] and out.latent_start == 5
    bottom = out.labels[0, 32:]
    left, right = bottom[:, :32].unique(), bottom[:, 32:].unique()
    assert left.numel() == 1 and right.numel() == 1 and left.item() != right.item()
    assert {left.item(), right.item()} == {5, 6}


def test_deterministic() -> None:
    labels = torch.randint(0, 4, (2, 64, 48))
    labels[:, 10:50, 5:40] = 255
    dense = torch.randn(2, 16, 4, 3)
    first = generate_pseudo_masks(labels, dense, num_seen=4, config=CFG)
    second = generate_pseudo_masks(labels.clone(), dense.clone(), num_seen=4, config=CFG)
    assert torch.equal(first.labels, second.labels)
    assert torch.equal(first.num_latent, second.num_latent)
    valid = first.labels[labels == 255]
    assert ((valid == 255) | ((valid >= 4) & (valid < 4 + first.num_latent.max()))).all()


def test_no_ignore_pixels_is_identity() -> None:
    labels = torch.randint(0, 3, (2, 32, 32))
    out = generate_pseudo_masks(labels, torch.randn(2, 8, 2, 2), num_seen=3, config=CFG)
    assert torch.equal(out.labels, labels) and out.num_latent.tolist() == [0, 0]


def test_all_ignore_and_min_area_and_max_regions() -> None:
    labels = torch.full((1, 64, 64), 255)
    dense = torch.randn(1, 16, 4, 4)
    out = generate_pseudo_masks(labels, dense, num_seen=3, config=CFG)
    assert out.num_latent.item() >= 1 and (out.labels != 255).any()
    capped = PseudoMaskConfig(scales=(2,), min_area=1, max_regions=1)
    one = generate_pseudo_masks(labels, dense, num_seen=3, config=capped)
    assert one.num_latent.item() == 1 and set(one.labels.unique().tolist()) <= {3, 255}
    strict = PseudoMaskConfig(scales=(2,), min_area=100)
    none = generate_pseudo_masks(labels, dense, num_seen=3, config=strict)
    assert none.num_latent.item() == 0 and (none.labels == 255).all()


def test_tiny_ignore_region_smaller_than_a_cell() -> None:
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, 3:5, 3:5] = 255  # 4 pixels inside one 16x16 teacher cell: minority -> not a region
    out = generate_pseudo_masks(labels, torch.randn(1, 8, 2, 2), num_seen=2, config=CFG)
    assert torch.equal(out.labels, labels) and out.num_latent.item() == 0
    labels[0, :16, :16] = 255  # one full cell: region without any "mostly inside" window
    out = generate_pseudo_masks(labels, torch.randn(1, 8, 2, 2), num_seen=2, config=CFG)
    assert out.num_latent.item() == 1 and (out.labels[0, :16, :16] == 2).all()


def test_transductive_unseen_assignment() -> None:
    labels, dense = _two_object_scene()
    seen_text = torch.eye(16)[[2, 7]]  # class 1 ~ direction c
    unseen_text = torch.eye(16)[[0, 9]]  # unseen 0 ~ direction a (bottom-left object)
    out = generate_pseudo_masks(
        labels,
        dense,
        num_seen=2,
        mode="transductive",
        seen_text=seen_text,
        unseen_text=unseen_text,
        config=PseudoMaskConfig(
            scales=(2, 4), min_area=1, unseen_temperature=0.05, unseen_threshold=0.9
        ),
    )
    assert out.latent_start == 4
    assert (out.labels[0, 32:, :32] == 2).all()  # Ns + 0
    assert (out.labels[0, 32:, 32:] == 4).all()  # first latent region
    with pytest.raises(ValueError, match="transductive mode needs"):
        generate_pseudo_masks(labels, dense, num_seen=2, mode="transductive")


def _noisy_two_object_grid() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 32x32 teacher grid (labels 512x512, 16 px per cell): two unseen objects (336 ignore
    cells), everything else seen class 1; features = unit prototype per object plus noise, so
    that a cell's mean cosine with its object mean is about 0.83.

    Returns:
        labels ``(1, 512, 512)``, teacher features ``(1, 64, 32, 32)`` and object ids of the
        cells ``(32, 32)`` (0 = seen, 1 and 2 = the objects).
    """
    g = torch.Generator().manual_seed(0)
    objects = torch.zeros(32, 32, dtype=torch.long)
    objects[4:16, 2:16] = 1  # 12 x 14 = 168 cells
    objects[18:30, 16:30] = 2  # 168 cells
    labels = torch.ones(1, 512, 512, dtype=torch.long)
    labels[0, objects.repeat_interleave(16, 0).repeat_interleave(16, 1) > 0] = 255
    protos = F.normalize(torch.randn(3, 64, generator=g), dim=-1)  # seen, object 1, object 2
    feats = protos[objects] + 0.085 * torch.randn(32, 32, 64, generator=g)  # (32, 32, 64)
    return labels, feats.permute(2, 0, 1)[None], objects


@pytest.mark.parametrize("scales", [(2, 4, 8), (4, 8)])
def test_small_clusters_do_not_leave_cells_ignored(scales: tuple[int, ...]) -> None:
    """Window scale 2 (stride 1) gives near-single-cell clusters; those below ``min_area`` must
    be dropped before the final assignment so that their cells join a surviving region. Before
    that rule, 259 of the 336 cells stayed ignored with scales (2, 4, 8) and 4 with (4, 8)."""
    labels, dense, objects = _noisy_two_object_grid()
    unit = F.normalize(dense[0], dim=0)  # (64, 32, 32)
    for k in (1, 2):
        cells = unit[:, objects == k]  # (64, 168)
        mean_cos = (F.normalize(cells.mean(dim=1), dim=0) @ cells).mean()
        assert abs(mean_cos.item() - 0.83) < 0.02
    config = PseudoMaskConfig(scales=scales)  # default min_area=4, merge_threshold=0.9
    out = generate_pseudo_masks(labels, dense, num_seen=3, config=config)
    cells = out.labels[0, ::16, ::16]  # (32, 32) one pixel per teacher cell
    assert torch.equal(out.labels[labels != 255], labels[labels != 255])
    assert int(((cells == 255) & (objects > 0)).sum()) == 0  # every object cell has a region
    majority = [cells[objects == k].mode().values.item() for k in (1, 2)]
    assert majority[0] != majority[1]
    for k in (1, 2):
        assert (cells[objects == k] == majority[k - 1]).float().mean() > 0.8
    for label in cells[objects > 0].unique().tolist():
        owners = objects[cells == label].bincount(minlength=3)  # seen, object 1, object 2
        assert owners.max() >= 0.9 * owners.sum()  # no region mixes the two objects


@pytest.mark.parametrize("min_area", [1, 4, 9, 30])
def test_every_surviving_region_has_min_area(min_area: int) -> None:
    """Surviving regions have at least ``min_area`` cells and together take every region cell."""
    labels, dense, objects = _noisy_two_object_grid()
    out = generate_pseudo_masks(
        labels, dense, num_seen=3, config=PseudoMaskConfig(min_area=min_area)
    )
    cells = out.labels[0, ::16, ::16]
    assert (cells[objects > 0] != 255).all()
    areas = cells[objects > 0].bincount()[out.latent_start :]  # (R,) cells per latent label
    assert int((areas > 0).sum()) == out.num_latent.item() == areas.numel()
    assert (areas >= min_area).all()


def test_region_of_small_blobs_keeps_one_region() -> None:
    """Three separate 3-cell ignore blobs on an 8×8 teacher grid, scale 2, ``min_area`` 4: every
    K-Means group is below 4 cells, but the region has 9. Dropping all small groups at once left
    0 regions; dropping the smallest first and reassigning keeps regions of >= 4 cells that
    cover all 9."""
    blobs = [[(0, 0), (0, 1), (1, 0)], [(3, 4), (3, 5), (4, 5)], [(6, 1), (7, 1), (7, 2)]]
    grid = torch.zeros(8, 8, dtype=torch.bool)
    for blob in blobs:
        for y, x in blob:
            grid[y, x] = True
    labels = torch.ones(1, 128, 128, dtype=torch.long)
    labels[0, grid.repeat_interleave(16, 0).repeat_interleave(16, 1)] = 255
    dense = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    config = PseudoMaskConfig(scales=(2,), min_area=4)
    out = generate_pseudo_masks(labels, dense, num_seen=3, config=config)
    cells = out.labels[0, ::16, ::16]  # (8, 8) one pixel per teacher cell
    areas = cells[grid].bincount()[out.latent_start :]  # (R,) cells per latent region
    assert out.num_latent.item() == areas.numel() >= 1
    assert (areas >= 4).all() and int(areas.sum()) == 9
    assert torch.equal(out.labels[labels != 255], labels[labels != 255])
    single = generate_pseudo_masks(labels, dense, num_seen=3, config=PseudoMaskConfig(scales=(2,)))
    assert torch.equal(single.labels, out.labels)  # the default min_area is 4 as well
    too_small = PseudoMaskConfig(scales=(2,), min_area=10)  # the region has only 9 cells
    none = generate_pseudo_masks(labels, dense, num_seen=3, config=too_small)
    assert none.num_latent.item() == 0 and torch.equal(none.labels, labels)


def test_prototype_means() -> None:
    features = torch.randn(2, 4, 3, 3, requires_grad=True)
    labels = torch.tensor([[[0, 0, 5], [255, 5, 2], [2, 2, 2]], [[1, 1, 1]] * 3])
    protos = class_prototypes(features, labels, num_seen=3, latent_start=5)
    p0 = protos[0]
    assert p0.seen_ids.tolist() == [0, 2] and p0.latent_ids.tolist() == [5]
    f = features[0].flatten(1)  # (D, 9)
    torch.testing.assert_close(p0.seen[0], f[:, [0, 1]].mean(1))
    torch.testing.assert_close(p0.seen[1], f[:, [5, 6, 7, 8]].mean(1))
    torch.testing.assert_close(p0.latent[0], f[:, [2, 4]].mean(1))
    assert protos[1].seen_ids.tolist() == [1] and protos[1].latent.shape == (0, 4)
    p0.latent.sum().backward()
    assert features.grad[0].flatten(1)[:, [2, 4]].abs().sum() > 0


def test_prototypes_skip_transductive_unseen_labels_and_downsample() -> None:
    labels = torch.tensor([[[3, 4], [6, 0]]])  # Ns=3, unseen 3..5, latent from 6
    protos = class_prototypes(torch.randn(1, 2, 2, 2), labels, num_seen=3, latent_start=6)
    assert protos[0].seen_ids.tolist() == [0] and protos[0].latent_ids.tolist() == [6]
    big = torch.arange(16).view(1, 4, 4)
    assert downsample_labels(big, (2, 2)).tolist() == [[[0, 2], [8, 10]]]
