"""Pseudo masks stay on their inputs' device whatever the default device is.

CPU inputs run under the ``meta`` default device: a tensor created on the default device instead
of the inputs' has no data there, and combining it with the CPU tensors raises.
"""

from __future__ import annotations

import torch

from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig, generate_pseudo_masks

GRID, CELL = 8, 4
CONFIG = PseudoMaskConfig(scales=(4,), min_area=2)


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Image 0: two objects (rows 0-3 and 4-7) in its ignore half; image 1: one object.

    Returns:
        ``(2, 32, 32)`` labels (255 in the left half, else seen class 0) and ``(2, 4, 8, 8)``
        teacher features.
    """
    eye = torch.eye(4)
    feats = eye[3][None, :, None, None].repeat(2, 1, GRID, GRID)  # (2, 4, 8, 8): labelled part
    feats[0, :, :4, :4] = eye[0][:, None, None]
    feats[0, :, 4:, :4] = eye[1][:, None, None]
    feats[1, :, :, :4] = eye[2][:, None, None]
    labels = torch.zeros(2, GRID * CELL, GRID * CELL, dtype=torch.long)
    labels[..., : 4 * CELL] = 255
    return labels, feats


def test_the_scene_has_two_regions_then_one() -> None:
    labels, feats = _scene()
    result = generate_pseudo_masks(labels, feats, num_seen=3, config=CONFIG)
    assert result.num_latent.tolist() == [2, 1]


def test_pseudo_masks_ignore_the_default_device() -> None:
    labels, feats = _scene()
    expected = generate_pseudo_masks(labels, feats, num_seen=3, config=CONFIG)
    with torch.device("meta"):
        result = generate_pseudo_masks(labels, feats, num_seen=3, config=CONFIG)
    assert result.labels.device.type == "cpu" and torch.equal(result.labels, expected.labels)
    assert torch.equal(result.num_latent, expected.num_latent)


def test_a_batch_without_ignore_pixels_ignores_the_default_device() -> None:
    """No region cell anywhere: the no-group path returns the labels unchanged."""
    labels, feats = _scene()
    labels = labels.clamp(max=2)
    with torch.device("meta"):
        result = generate_pseudo_masks(labels, feats, num_seen=3, config=CONFIG)
    assert result.labels.device.type == "cpu" and torch.equal(result.labels, labels)
    assert result.num_latent.tolist() == [0, 0]
