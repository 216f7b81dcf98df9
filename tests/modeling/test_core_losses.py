"""Segmentation loss, SAM and SGD against independent reference computations."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from chimeraseg.modeling.losses import (
    SelectiveGlobalDistillation,
    round_half_away_from_zero,
    segmentation_loss,
    semantic_alignment_loss,
)
from chimeraseg.modeling.settings import SAMSettings, SegLossSettings, SGDSettings

SEG = vars(SegLossSettings())  # the defaults: CE and focal weight 1, gamma 2
SAM = vars(SAMSettings(tau_c=0.01))  # the builder fills in a CLIP's own tau_c; no CLIP here


# ----------------------------------------------------------------------------- segmentation
def test_segmentation_loss_hand_computed() -> None:
    # One image, 1x2 pixels, 2 classes; second pixel ignored.
    logits = torch.tensor([[[[2.0, 5.0]], [[0.0, -1.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 255]]])
    p = math.exp(2.0) / (math.exp(2.0) + math.exp(0.0))
    ce = -math.log(p)
    focal = -((1 - p) ** 2) * math.log(p)
    got = segmentation_loss(logits, target, **SEG)
    assert got.item() == pytest.approx(ce + focal, rel=1e-6)
    only_focal = segmentation_loss(logits, target, ce_weight=0.0, focal_weight=2.0, focal_gamma=2.0)
    assert only_focal.item() == pytest.approx(2 * focal, rel=1e-5)


def test_segmentation_loss_mean_over_valid_pixels_and_upsampling() -> None:
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, :4] = 255
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    ref = F.cross_entropy(up, target, ignore_index=255)
    got = segmentation_loss(logits, target, **{**SEG, "focal_weight": 0.0})
    torch.testing.assert_close(got, ref)


def test_segmentation_loss_all_ignore_is_zero_with_graph() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 16, 16), 255), **SEG)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_segmentation_loss_rejects_out_of_range_target() -> None:
    message = r"target value {} is outside \[0, 3\) and is not the ignore value 255"
    with pytest.raises(ValueError, match=message.format(7)):
        segmentation_loss(torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), 7), **SEG)
    for value in (3, -1):  # one bad pixel, at the first value past each end of the range
        target = torch.tensor([[[0, 255], [2, value]]])
        with pytest.raises(ValueError, match=message.format(value)):
            segmentation_loss(torch.randn(1, 3, 2, 2), target, **SEG)


@pytest.mark.parametrize(
    ("logits", "target"),
    [((2, 3, 4, 4), (1, 4, 4)), ((3, 4, 4), (3, 4, 4)), ((1, 3, 4, 4), (1, 1, 4, 4))],
)
def test_segmentation_loss_rejects_mismatched_shapes(logits: tuple, target: tuple) -> None:
    message = (
        "segmentation_loss expects logits (B, C, h, w) and target (B, H, W); "
        f"got {logits} and {target}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        segmentation_loss(torch.randn(logits), torch.zeros(target, dtype=torch.long), **SEG)


# ------------------------------------------------------------------------------------- SAM
def test_sam_matches_torch_distributions_kl() -> None:
    protos, text, cls = torch.randn(5, 8), torch.randn(5, 8), torch.randn(4, 8)
    got = semantic_alignment_loss(protos, text, cls, tau_f=0.07, tau_c=0.01)
    n = F.normalize
    p = Categorical(logits=n(protos, dim=-1) @ n(cls, dim=-1).t() / 0.07)
    q = Categorical(logits=n(text, dim=-1) @ n(cls, dim=-1).t() / 0.01)
    torch.testing.assert_close(got, kl_divergence(p, q).mean())


def test_sam_normaliser_divides_the_summed_kl_and_rejects_bad_values() -> None:
    protos, text, cls = torch.randn(5, 8), torch.randn(5, 8), torch.randn(4, 8)
    mean = semantic_alignment_loss(protos, text, cls, **SAM)
    halved = semantic_alignment_loss(protos, text, cls, **SAM, normaliser=2.5)
    torch.testing.assert_close(halved, mean * 2)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=rf"normaliser={bad!r} must be finite and > 0"):
            semantic_alignment_loss(protos, text, cls, **SAM, normaliser=bad)


def test_sam_zero_for_single_image_or_no_prototypes() -> None:
    protos = torch.randn(3, 8, requires_grad=True)
    loss = semantic_alignment_loss(protos, torch.randn(3, 8), torch.randn(1, 8), **SAM)
    assert loss.item() == 0.0 and loss.requires_grad
    empty = semantic_alignment_loss(torch.zeros(0, 8), torch.zeros(0, 8), torch.randn(4, 8), **SAM)
    assert empty.item() == 0.0


def test_sam_zero_when_distributions_match() -> None:
    text, cls = torch.randn(3, 8), torch.randn(4, 8)
    assert semantic_alignment_loss(text, text, cls, tau_f=0.05, tau_c=0.05).abs() < 1e-6


# ------------------------------------------------------------------------------------- SGD
def _reference_sgd(features: torch.Tensor, cls: torch.Tensor, tau: float) -> torch.Tensor:
    """Plain softmax pooling over all positions followed by InfoNCE, written independently."""
    b, d = features.shape[:2]
    losses = []
    for i in range(b):
        f = features[i].reshape(d, -1).t()  # (hw, D)
        w = torch.softmax(f @ cls[i] / math.sqrt(d), dim=0)
        g = F.normalize((w[:, None] * f).sum(0), dim=0)
        sims = torch.stack([g @ F.normalize(c, dim=0) for c in cls]) / tau
        losses.append(-torch.log_softmax(sims, dim=0)[i])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("k_init", [16, 9000])
def test_sgd_equals_softmax_pooling_infonce_when_k_covers_grid(k_init: int) -> None:
    features = torch.randn(3, 8, 4, 4, requires_grad=True)
    cls = F.normalize(torch.randn(3, 8), dim=-1)
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=k_init, mode="none"))
    got = sgd(features, cls, iteration=0, generator=torch.Generator().manual_seed(1))
    ref = _reference_sgd(features, cls, 0.07)
    torch.testing.assert_close(got, ref)
    got.backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_sgd_k1_selects_one_position_and_is_deterministic() -> None:
    features, cls = torch.randn(2, 8, 3, 3), F.normalize(torch.randn(2, 8), dim=-1)
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=1, mode="none"))
    pooled = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(3))
    tokens = features.flatten(2).transpose(1, 2)  # (B, hw, D)
    for i in range(2):
        assert (tokens[i] - pooled[i]).abs().amax(dim=1).min() < 1e-6  # one exact position
    again = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(3))
    assert torch.equal(pooled, again)


def test_k_schedule_all_modes() -> None:
    dec = SelectiveGlobalDistillation(SGDSettings(k_init=9000, k_step=0.1, mode="decrease"))
    assert [dec.k_at(t) for t in (0, 4, 5, 15, 25, 1000)] == [9000, 9000, 9000, 8999, 8998, 8900]
    assert dec.k_at(10**6) == 1  # clamped below
    assert dec.k_at(0, num_positions=1024) == 1024  # clamped to h·w
    inc = SelectiveGlobalDistillation(SGDSettings(k_init=100, k_step=0.1, mode="increase"))
    assert [inc.k_at(t) for t in (0, 5, 15, 1000)] == [100, 101, 102, 200]
    none = SelectiveGlobalDistillation(SGDSettings(k_init=100, mode="none"))
    assert none.k_at(12345) == 100 and none.k_at(0, num_positions=10) == 10


def test_round_half_away_from_zero_differs_from_bankers() -> None:
    assert round(8998.5) == 8998 and round_half_away_from_zero(8998.5) == 8999
    assert round_half_away_from_zero(-2.5) == -3 and round_half_away_from_zero(2.4) == 2


def test_sgd_rejects_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode='down'"):
        SGDSettings(mode="down")
