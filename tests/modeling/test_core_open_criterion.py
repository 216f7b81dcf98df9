"""A loss added from outside the package, through the public API only, trains with the others."""

from __future__ import annotations

import pytest
import torch
from chimeraseg_test_utils import TINY_SEEN, build_tiny_model
from torch import nn

from chimeraseg.modeling import LossSettings, PseudoMaskConfig, TrainingOutputs, register_loss
from chimeraseg.modeling.losses import registered_losses


class FeatureNormLoss(nn.Module):
    """Toy loss: mean squared norm of the CSH features (pulls them towards 0)."""

    def __init__(self, settings: LossSettings) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, outputs: TrainingOutputs, iteration: int) -> torch.Tensor:
        self.calls += 1
        return outputs.features.pow(2).sum(dim=1).mean()


if "loss_toy_norm" not in registered_losses():
    register_loss("loss_toy_norm")(FeatureNormLoss)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64) * 255
    labels = torch.tensor(TINY_SEEN)[torch.randint(0, 4, (2, 64, 64))]
    labels[:, 32:, :40] = 255
    return images, labels


def test_registered_toy_loss_is_weighted_and_trains_a_step(tiny_clip: nn.Module) -> None:
    losses = LossSettings(seed=0).with_weights(loss_toy_norm=0.5)
    pseudo = PseudoMaskConfig(scales=(2,), kmeans_iters=2, min_area=1)
    model = build_tiny_model(tiny_clip, losses=losses, pseudo_masks=pseudo).train()
    images, labels = _batch()
    out = model.forward_train(images, labels, 0)
    assert list(out) == ["loss_seg", "loss_sgd", "loss_sam", "loss_toy_norm"]
    toy = model.criterion.losses["loss_toy_norm"]
    features = model.clip_features(images)  # (B, D, h, w), same weights as the step
    expected = 0.5 * features.pow(2).sum(dim=1).mean()
    torch.testing.assert_close(out["loss_toy_norm"], expected, rtol=1e-4, atol=1e-5)
    before = model.head.mlp[0].weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sum(out.values()).backward()
    optimizer.step()
    assert not torch.equal(before, model.head.mlp[0].weight)
    assert toy.calls == 1


def test_zero_weight_loss_is_not_built_or_called(tiny_clip: nn.Module) -> None:
    losses = LossSettings(seed=0).with_weights(loss_toy_norm=0.0)
    model = build_tiny_model(tiny_clip, losses=losses).train()
    assert "loss_toy_norm" not in model.criterion.losses
    out = model.forward_train(*_batch(), 0)
    assert out["loss_toy_norm"].item() == 0.0


def test_register_loss_refuses_bad_or_repeated_names() -> None:
    with pytest.raises(ValueError, match="must start with 'loss_'"):
        register_loss("toy")(FeatureNormLoss)
    with pytest.raises(ValueError, match="'loss_seg' is registered already"):
        register_loss("loss_seg")(FeatureNormLoss)
