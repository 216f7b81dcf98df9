"""Padding (image 0, label 255, ``valid`` False) is neither a latent region nor selected by SGD."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from chimeraseg_test_utils import build_tiny_model
from torch import nn

import chimeraseg.modeling.chimeraseg_model as core
import chimeraseg.modeling.losses.selective_global_distillation as sgd_module
import chimeraseg.modeling.losses.semantic_alignment as sam_module
from chimeraseg.modeling import (
    ChimeraSegModel,
    LossSettings,
    PseudoMaskConfig,
    SelectiveGlobalDistillation,
    SGDSettings,
)
from chimeraseg.modeling.pseudo_masks import generate_pseudo_masks

CONFIG = PseudoMaskConfig(scales=(2,), kmeans_iters=3, min_area=1)


def _padded_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """64x64 labels on a 4x4 teacher grid (16 px cells).

    Seen class 0 on rows 0..31, a real ignore region on rows 32..63 / cols 0..47 and padding
    (label 255, invalid) on cols 48..63. Teacher features: one direction per part.
    """
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, 32:] = 255
    labels[:, :, 48:] = 255
    valid = torch.zeros(1, 64, 64, dtype=torch.bool)
    valid[:, :, :48] = True
    dense = torch.zeros(1, 8, 4, 4)
    dense[:, 0, :2, :3] = 1.0  # seen
    dense[:, 1, 2:, :3] = 1.0  # real ignore region
    dense[:, 2, :, 3] = 1.0  # padding
    return labels, dense, valid


def test_padding_stays_ignored_while_valid_ignore_gets_latent_labels() -> None:
    labels, dense, valid = _padded_scene()
    old = generate_pseudo_masks(labels, dense, num_seen=3, config=CONFIG)
    assert bool((old.labels[:, :, 48:] != 255).all())  # the bug: padding became a region
    assert int(old.num_latent) == 2
    new = generate_pseudo_masks(labels, dense, num_seen=3, config=CONFIG, valid=valid)
    assert bool((new.labels[:, :, 48:] == 255).all())
    assert int(new.num_latent) == 1
    assert bool((new.labels[:, 32:, :48] == new.latent_start).all())
    assert torch.equal(new.labels[:, :32, :48], labels[:, :32, :48])


@pytest.mark.parametrize("valid_cols", [39, 40])  # 7/16 or 8/16 of the third cell column
def test_cell_needs_half_valid_pixels(valid_cols: int) -> None:
    labels, dense, valid = _padded_scene()
    valid[:, :, valid_cols:] = False
    labels[~valid] = 255  # as the mapper pads
    config = dataclasses.replace(CONFIG, region_ignore_fraction=0.25)  # 7/16 ignore would pass
    out = generate_pseudo_masks(labels, dense, num_seen=3, config=config, valid=valid)
    assert bool((out.labels[:, 32:, :32] == out.latent_start).all())
    assert bool((out.labels[:, :, valid_cols:] == 255).all())
    third = out.labels[:, 32:, 32:valid_cols]
    assert bool((third == (255 if valid_cols == 39 else out.latent_start)).all())


def test_pseudo_masks_all_valid_equals_none_and_rejects_bad_mask() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 64, 64))
    labels[:, 16:, 8:] = 255
    dense = torch.randn(2, 8, 4, 4)
    for mode in ("inductive", "transductive"):
        kwargs = dict(num_seen=3, mode=mode, seen_text=torch.randn(3, 8), config=CONFIG)
        kwargs["unseen_text"] = torch.randn(2, 8)
        ref = generate_pseudo_masks(labels, dense, **kwargs)
        full = generate_pseudo_masks(labels, dense, valid=torch.ones_like(labels).bool(), **kwargs)
        assert torch.equal(ref.labels, full.labels) and torch.equal(ref.num_latent, full.num_latent)
    with pytest.raises(
        ValueError, match=r"valid \(2, 64, 64\) torch.float32 must be a bool tensor shaped like"
    ):
        generate_pseudo_masks(labels, dense, num_seen=3, valid=torch.ones(2, 64, 64))


def _sgd_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    features = torch.randn(2, 16, 6, 6)
    cls = F.normalize(torch.randn(2, 16), dim=-1)
    valid = torch.ones(2, 6, 6, dtype=torch.bool)
    valid[0, :, 4:] = False  # 24 valid positions
    valid[1, 3:] = False  # 18 valid positions
    return features, cls, valid


@pytest.mark.parametrize("k_init", [5, 20, 30, 1000])  # 20 and 30: K clamped in one/both images
def test_sgd_loss_ignores_padded_features(k_init: int) -> None:
    features, cls, valid = _sgd_inputs()
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=k_init, mode="none"))
    huge = torch.where(valid[:, None], features, 1e4 * torch.randn_like(features).abs())
    zero = torch.where(valid[:, None], features, torch.zeros_like(features))
    losses = []
    for f in (huge, zero):
        f = f.clone().requires_grad_(True)
        loss = sgd(f, cls, 0, generator=torch.Generator().manual_seed(3), valid=valid, gather=False)
        loss.backward()
        assert torch.isfinite(loss) and bool((f.grad * ~valid[:, None]).eq(0).all())
        losses.append(loss)
    assert torch.equal(losses[0], losses[1])
    unmasked = sgd(huge, cls, 0, generator=torch.Generator().manual_seed(3), gather=False)
    assert not torch.allclose(unmasked, losses[0])  # without the mask the padding dominates


def test_sgd_pooling_covers_exactly_the_valid_positions_when_k_is_large() -> None:
    features, cls, valid = _sgd_inputs()
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=1000, mode="none"))
    pooled = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(0), valid)
    for i in range(2):
        tokens = features[i].flatten(1).t()[valid[i].flatten()]  # (Nv, D)
        weights = torch.softmax(tokens @ cls[i] / 4.0, dim=0)  # 1/sqrt(16)
        torch.testing.assert_close(pooled[i], weights @ tokens)


def test_sgd_all_valid_equals_none_and_empty_image_keeps_one_position() -> None:
    features, cls, _ = _sgd_inputs()
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=7, mode="none"))
    ref = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(0))
    full = torch.ones(2, 6, 6, dtype=torch.bool)
    out = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(0), full)
    assert torch.equal(ref, out)
    empty = full.clone()
    empty[1] = False
    pooled = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(0), empty)
    torch.testing.assert_close(pooled[1], features[1, :, 0, 0])
    with pytest.raises(
        ValueError, match=r"valid \(2, 5, 6\) torch.bool must be a bool tensor of shape"
    ):
        sgd(features, cls, 0, valid=full[:, :5])


def _model(clip: nn.Module, **loss_options) -> ChimeraSegModel:
    torch.manual_seed(0)
    losses = LossSettings(sgd=SGDSettings(k_init=50, k_step=0.1), seed=0, **loss_options)
    return build_tiny_model(clip, losses=losses, pseudo_masks=CONFIG).train()


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    images = torch.rand(2, 3, 64, 64) * 255
    labels = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (2, 64, 64))]
    labels[:, 32:, :32] = 255  # real ignore region
    valid = torch.ones(2, 64, 64, dtype=torch.bool)
    valid[0, :, 40:] = False  # mapper padding of image 0
    valid[1, 48:] = False  # batch padding of image 1
    images[~valid[:, None].expand_as(images)] = 0.0
    labels[~valid] = 255
    return images, labels, valid


def test_model_keeps_padding_out_of_pseudo_masks(tiny_clip: nn.Module, monkeypatch) -> None:
    captured = []

    def spy(*args, **kwargs):
        captured.append(generate_pseudo_masks(*args, **kwargs))
        return captured[-1]

    monkeypatch.setattr(core, "generate_pseudo_masks", spy)
    model = _model(tiny_clip)
    images, labels, valid = _padded_batch()
    losses = model.forward_train(images, labels, 0, valid=valid)
    assert all(torch.isfinite(v) for v in losses.values())
    pseudo = captured[-1]
    assert bool((pseudo.labels[~valid] == 255).all())
    assert bool((pseudo.labels[:, 32:, :32] != 255).any())  # the real ignore region is used
    message = f"valid {tuple(valid[:, :32].shape)} torch.bool must be bool shaped like labels"
    with pytest.raises(ValueError, match=re.escape(message)):
        model.forward_train(images, labels, 0, valid=valid[:, :32])


def test_model_valid_none_equals_all_valid(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip)
    images, labels, _ = _padded_batch()
    ref = model.forward_train(images, labels, 3)
    model.criterion.losses["loss_sgd"]._generators = {}  # same Gumbel noise again
    full = model.forward_train(images, labels, 3, valid=torch.ones_like(labels, dtype=torch.bool))
    for key in ref:
        assert torch.equal(ref[key], full[key]), key


@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("with_distillation", [True, False])
def test_sgd_and_sam_follow_the_criterion_gather_flag(
    tiny_clip: nn.Module, monkeypatch, gather: bool, with_distillation: bool
) -> None:
    calls = []

    def spy(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        calls.append(tensor.shape)
        return tensor.detach(), 0

    monkeypatch.setattr(sam_module, "all_gather_rows", spy)
    monkeypatch.setattr(sgd_module, "all_gather_rows", spy)
    options = {"gather": gather}
    if not with_distillation:
        options["weights"] = {"loss_seg": 1.0, "loss_sgd": 0.0, "loss_sam": 0.5}
    model = _model(tiny_clip, **options)
    images, labels, valid = _padded_batch()
    model.forward_train(images, labels, 0, valid=valid)
    assert len(calls) == (1 + with_distillation if gather else 0)
