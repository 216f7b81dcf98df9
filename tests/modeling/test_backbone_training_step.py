"""One optimisation step of backbone + decoder: every trainable parameter gets a gradient."""

from __future__ import annotations

import pytest
import torch

from chimeraseg.modeling.backbone import build_mit, build_vit_b16, mit_decoder_dim
from chimeraseg.modeling.decoder import SegFormerDecoder


def _train_step(backbone: torch.nn.Module, embed_dim: int, size: tuple[int, int]) -> None:
    decoder = SegFormerDecoder(backbone.out_channels, embed_dim=embed_dim, dropout=0.1)
    model = torch.nn.ModuleDict({"backbone": backbone, "decoder": decoder}).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    images = torch.randn(2, 3, *size)
    features = decoder(backbone(images))  # (2, E, ceil(H/4), ceil(W/4))
    target = torch.randn_like(features)
    loss = torch.nn.functional.mse_loss(features, target)
    loss.backward()
    names = {id(p): n for n, p in model.named_parameters()}
    for p in params:
        assert p.grad is not None, names[id(p)]
        assert torch.isfinite(p.grad).all(), names[id(p)]
        assert p.grad.abs().sum() > 0, names[id(p)]
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in params)


def test_mit_b0_and_decoder_train_step():
    _train_step(build_mit("b0", drop_path_rate=0.0), mit_decoder_dim("b0"), (67, 45))


@pytest.mark.slow
def test_vit_b16_and_decoder_train_step():
    _train_step(build_vit_b16(drop_path_rate=0.0), 32, (40, 33))
