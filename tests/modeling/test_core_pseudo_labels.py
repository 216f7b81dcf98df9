"""Pseudo-mask label layout on tiny hand-built scenes: region rule, seeds, numbering, unseen."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig, generate_pseudo_masks

CELL = 16


def _features(grid: torch.Tensor) -> torch.Tensor:
    """``(1, D, h, w)`` teacher features: cell value ``k`` -> one-hot direction ``k``."""
    return F.one_hot(grid, int(grid.max()) + 1).permute(2, 0, 1)[None].float()


def _ignore_labels(ignore: torch.Tensor, seen: int = 1) -> torch.Tensor:
    """``(1, h*16, w*16)`` labels: ``seen`` everywhere, 255 on the cells of ``ignore``."""
    labels = torch.full((1, *(s * CELL for s in ignore.shape)), seen, dtype=torch.long)
    labels[0, ignore.repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)] = 255
    return labels


def _cells(labels: torch.Tensor) -> torch.Tensor:
    return labels[:, ::CELL, ::CELL]


def test_a_cell_exactly_half_ignore_is_a_region() -> None:
    """``region_ignore_fraction`` 0.5 is inclusive: a cell with 128 of 256 ignore pixels forms a
    one-cell region, whose ignore pixels get the first latent label."""
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, :8, :16] = 255  # half of cell (0, 0)
    out = generate_pseudo_masks(
        labels, torch.randn(1, 4, 2, 2), num_seen=2, config=PseudoMaskConfig(min_area=1)
    )
    assert out.num_latent.tolist() == [1]
    expected = labels.clone()
    expected[0, :8, :16] = 2
    assert torch.equal(out.labels, expected)


def test_zero_ignore_fraction_still_needs_an_ignore_pixel() -> None:
    """With ``region_ignore_fraction`` 0, cells without any ignore pixel stay outside the region:
    four orthogonal cells, one ignored, give one latent region, not four."""
    grid = torch.arange(4).view(2, 2)
    labels = _ignore_labels(grid == 0)
    config = PseudoMaskConfig(scales=(1,), min_area=1, region_ignore_fraction=0.0)
    out = generate_pseudo_masks(labels, _features(grid), num_seen=2, config=config)
    assert out.num_latent.tolist() == [1]
    assert _cells(out.labels).tolist() == [[[2, 1], [1, 1]]]


def test_seedless_region_gets_its_fallback_seed_in_a_batch() -> None:
    """Image 1's one-cell region has no window mostly inside it; it still gets a region although
    image 0 of the same batch has seeded clusters."""
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[0] = 255
    labels[1, :16, :16] = 255
    config = PseudoMaskConfig(scales=(2,), min_area=1, merge_threshold=-1.0)
    out = generate_pseudo_masks(labels, torch.randn(2, 4, 2, 2), num_seen=3, config=config)
    assert out.num_latent.tolist() == [1, 1]
    assert (out.labels[0] == 3).all()
    assert (out.labels[1, :16, :16] == 3).all() and (out.labels[1, 16:] == 0).all()


def test_single_cell_clusters_need_no_fallback_seed() -> None:
    """Scale 1 seeds every region cell: two orthogonal cells are two clusters of one cell each,
    two regions (cosine 0 < 0.5), with no extra mean seed merging them."""
    grid = torch.tensor([[0, 1], [2, 2]])
    labels = _ignore_labels(grid < 2)
    config = PseudoMaskConfig(scales=(1,), min_area=1, merge_threshold=0.5)
    out = generate_pseudo_masks(labels, _features(grid), num_seen=2, config=config)
    assert out.num_latent.tolist() == [2]
    assert _cells(out.labels).tolist() == [[[2, 3], [1, 1]]]


def test_equal_areas_are_numbered_in_raster_order() -> None:
    """24 orthogonal one-cell regions (scale 1) all have area 1; equal areas are numbered by
    first cluster, here raster order, from ``latent_start`` on."""
    grid = torch.arange(24).view(4, 6)
    labels = _ignore_labels(torch.ones(4, 6, dtype=torch.bool))
    config = PseudoMaskConfig(scales=(1,), min_area=1)
    out = generate_pseudo_masks(labels, _features(grid), num_seen=3, config=config)
    assert out.num_latent.tolist() == [24] and out.latent_start == 3
    assert torch.equal(_cells(out.labels)[0], grid + 3)


def test_latent_labels_have_no_gaps_after_empty_groups() -> None:
    """Scales (2, 1) on 24 orthogonal cells: the scale-2 clusters that mix cells lead the merge
    but end up without cells, so they must not take latent labels: the 24 one-cell regions use
    exactly ``latent_start .. latent_start + 23``."""
    grid = torch.arange(24).view(4, 6)
    labels = _ignore_labels(torch.ones(4, 6, dtype=torch.bool))
    config = PseudoMaskConfig(scales=(2, 1), min_area=1)
    out = generate_pseudo_masks(labels, _features(grid), num_seen=3, config=config)
    assert out.num_latent.tolist() == [24]
    assert sorted(_cells(out.labels).flatten().tolist()) == list(range(3, 27))


def test_latent_regions_are_capped_below_the_ignore_label() -> None:
    """With 253 seen classes only labels 253 and 254 are free: of three one-cell regions the
    first two (raster order) are kept, the third stays 255; 255 classes raise."""
    grid = torch.tensor([[0, 1], [2, 3]])
    labels = _ignore_labels(grid < 3, seen=7)
    config = PseudoMaskConfig(scales=(1,), min_area=1)
    out = generate_pseudo_masks(labels, _features(grid), num_seen=253, config=config)
    assert out.num_latent.tolist() == [2] and out.latent_start == 253
    assert _cells(out.labels).tolist() == [[[253, 254], [255, 7]]]
    last = generate_pseudo_masks(labels, _features(grid), num_seen=254, config=config)
    assert last.num_latent.tolist() == [1]
    assert _cells(last.labels).tolist() == [[[254, 255], [255, 7]]]
    message = (
        "generate_pseudo_masks: 255 seen+unseen classes leave no label below ignore label 255 "
        "for latent regions"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_pseudo_masks(labels, _features(grid), num_seen=255, config=config)


def test_num_latent_is_long_without_any_region() -> None:
    """No ignore pixel: zero regions, reported as a long ``(B,)`` tensor."""
    labels = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    out = generate_pseudo_masks(labels, torch.randn(2, 4, 2, 2), num_seen=3)
    assert out.num_latent.dtype == torch.long and out.num_latent.tolist() == [0, 0]


def _transductive(
    labels: torch.Tensor,
    feats: torch.Tensor,
    seen_text: torch.Tensor,
    unseen_text: torch.Tensor,
    **knobs: float,
) -> torch.Tensor:
    config = PseudoMaskConfig(scales=(1,), min_area=1, **knobs)
    out = generate_pseudo_masks(
        labels,
        feats,
        num_seen=seen_text.shape[0],
        mode="transductive",
        seen_text=seen_text,
        unseen_text=unseen_text,
        config=config,
    )
    return _cells(out.labels)[0]


def test_unseen_labels_follow_the_text_softmax() -> None:
    """Unseen label ``Ns + j`` exactly where the softmax over cosines with the normalised texts
    (temperature 0.5) picks unseen ``j`` with confidence above 0.6, re-derived here."""
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 4, 4, 4, generator=g)
    seen_text = torch.randn(2, 4, generator=g) * torch.tensor([[3.0], [0.5]])
    unseen_text = torch.randn(2, 4, generator=g) * torch.tensor([[2.0], [0.2]])
    text = torch.cat([seen_text, unseen_text])
    cos = F.normalize(feats[0], dim=0).flatten(1).T @ F.normalize(text, dim=1).T  # (16, 4)
    confidence, best = (cos / 0.5).softmax(dim=1).max(dim=1)
    take = ((best >= 2) & (confidence > 0.6)).view(4, 4)
    assert 3 <= int(take.sum()) <= 13  # both outcomes occur
    labels = torch.full((1, 64, 64), 255, dtype=torch.long)
    cells = _transductive(
        labels, feats, seen_text, unseen_text, unseen_temperature=0.5, unseen_threshold=0.6
    )
    assert torch.equal(cells[take], best.view(4, 4)[take])
    assert (cells[~take] >= 4).all()  # the rest becomes latent regions


def test_unseen_confidence_must_exceed_the_threshold() -> None:
    """Two identical unseen texts tie at softmax 0.5 exactly: threshold 0.5 labels nothing
    unseen (latent region 3 instead), threshold 0.49 gives unseen 0 (label 1)."""
    e = torch.eye(3)
    feats = e[0].view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    seen_text, unseen_text = e[[2]], e[[0, 0]]
    logits = feats[0, :, 0, 0] @ torch.cat([seen_text, unseen_text]).T / 0.01
    assert logits.softmax(dim=0).max().item() == 0.5
    labels = torch.full((1, 32, 32), 255, dtype=torch.long)
    at = _transductive(labels, feats, seen_text, unseen_text, unseen_threshold=0.5)
    assert (at == 3).all()
    below = _transductive(labels, feats, seen_text, unseen_text, unseen_threshold=0.49)
    assert (below == 1).all()


def test_unseen_class_zero_without_seen_classes() -> None:
    """With no seen class unseen ``j`` is label ``j``, so label 0 is a valid unseen label and
    its cells leave the latent region."""
    grid = torch.tensor([[0, 1], [0, 1]])
    labels = torch.full((1, 32, 32), 255, dtype=torch.long)
    cells = _transductive(labels, _features(grid), torch.zeros(0, 2), torch.eye(2))
    assert cells.tolist() == [[0, 1], [0, 1]]


def test_argument_errors_name_the_offending_values() -> None:
    """Wrong mode, shapes and missing texts raise with the full message."""
    labels = torch.full((2, 32, 32), 255, dtype=torch.long)
    feats = torch.randn(2, 4, 2, 2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "generate_pseudo_masks: mode='zero' is not one of ('inductive', 'transductive')"
        ),
    ):
        generate_pseudo_masks(labels, feats, num_seen=2, mode="zero")
    shapes = (
        "generate_pseudo_masks: labels {} must be (B, H, W) and teacher_dense {} (B, D, h', w')"
    )
    with pytest.raises(ValueError, match=re.escape(shapes.format((2, 1, 32, 32), (2, 4, 2, 2)))):
        generate_pseudo_masks(labels[:, None], feats, num_seen=2)
    with pytest.raises(ValueError, match=re.escape(shapes.format((2, 32, 32), (1, 4, 2, 2)))):
        generate_pseudo_masks(labels, feats[:1], num_seen=2)
    texts = (
        "generate_pseudo_masks: transductive mode needs seen_text (Ns, D) with Ns = 2 and "
        "unseen_text (Nu, D)"
    )
    seen, unseen = torch.randn(2, 4), torch.randn(1, 4)
    for seen_text, unseen_text in [(seen, None), (None, unseen), (seen[:1], unseen)]:
        with pytest.raises(ValueError, match=re.escape(texts)):
            generate_pseudo_masks(
                labels,
                feats,
                num_seen=2,
                mode="transductive",
                seen_text=seen_text,
                unseen_text=unseen_text,
            )
