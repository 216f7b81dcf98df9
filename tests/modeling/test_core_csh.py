"""CLIP Semantic Head: reference forward, freezing, norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.modeling.csh import ChannelLastGroupNorm, CLIPSemanticHead
from chimeraseg.modeling.settings import HeadSettings


def _reference_head(
    head: CLIPSemanticHead, clip_visual: nn.Module, x: torch.Tensor
) -> torch.Tensor:
    """Paper §III-B written from the raw CLIP block weights, BN in eval mode, NCHW layout."""
    block = clip_visual.transformer.resblocks[-1]
    dv = block.ln_1.normalized_shape[0]
    tokens = x.permute(0, 2, 3, 1)  # (B, h, w, E)
    fp = head.mlp[0](tokens)  # the head's own trainable Linear (random init)
    v_w = block.attn.in_proj_weight[2 * dv :]
    v_b = block.attn.in_proj_bias[2 * dv :]
    fv1 = block.attn.out_proj(F.linear(block.ln_1(fp), v_w, v_b)) + fp
    fv = block.mlp(block.ln_2(fv1)) + fv1
    bn = head.norm.bn
    fv_nchw = fv.permute(0, 3, 1, 2)  # (B, Dv, h, w)
    fbn = F.batch_norm(
        fv_nchw, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
    )
    fres = fp.permute(0, 3, 1, 2) + fbn
    return torch.einsum("bchw,cd->bdhw", fres, clip_visual.proj)


def test_csh_matches_reference_with_bn_eval(tiny_clip: nn.Module) -> None:
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings())
    with torch.no_grad():  # non-trivial BN statistics and affine
        head.norm.bn.running_mean.normal_()
        head.norm.bn.running_var.uniform_(0.5, 2.0)
        head.norm.bn.weight.normal_()
        head.norm.bn.bias.normal_()
    head.eval()
    x = torch.randn(2, 16, 5, 6)
    out = head(x)
    assert out.shape == (2, 32, 5, 6)
    torch.testing.assert_close(
        out, _reference_head(head, tiny_clip.visual, x), rtol=1e-4, atol=1e-5
    )


def test_bn_train_statistics_equal_batchnorm2d(tiny_clip: nn.Module) -> None:
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings()).train()
    tokens = torch.randn(2, 3, 4, 64)
    ref_bn = nn.BatchNorm2d(64).train()
    out = head.norm(tokens)
    ref = ref_bn(tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(head.norm.bn.running_var, ref_bn.running_var)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(head)
    assert isinstance(converted.norm.bn, nn.SyncBatchNorm)


def test_channel_last_group_norm_equals_group_norm() -> None:
    ours, ref = ChannelLastGroupNorm(32, 64), nn.GroupNorm(32, 64)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 5, 64)
    torch.testing.assert_close(ours(x), ref(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def _grad_names(head: CLIPSemanticHead) -> set[str]:
    head.train()
    head(torch.randn(2, 16, 3, 3)).square().sum().backward()
    return {n.split(".")[0] for n, p in head.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {"mlp", "norm"}),
        ({"proj": "learnable"}, {"mlp", "norm", "proj"}),
        ({"proj": "he"}, {"mlp", "norm", "proj"}),
        ({"trainable_value": True}, {"mlp", "norm", "vencoder"}),
        ({"norm": "LN_clip"}, {"mlp"}),
        ({"norm": "none", "vencoder_blocks": 0}, {"mlp"}),
    ],
)
def test_gradient_flow(tiny_clip: nn.Module, kwargs: dict, expected: set[str]) -> None:
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(**kwargs))
    assert _grad_names(head) == expected
    # Frozen means requires_grad=False (an optimizer then cannot move it); every trainable
    # parameter group is one that received a gradient, and the others are frozen.
    trainable = {n.split(".")[0] for n, p in head.named_parameters() if p.requires_grad}
    assert trainable == expected


def test_trainable_ffn_only_trains_ffn(tiny_clip: nn.Module) -> None:
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(trainable_ffn=True))
    _grad_names(head)
    trained = {n for n, p in head.vencoder.named_parameters() if p.grad is not None}
    assert trained and all(".mlp." in n or ".ln_2." in n for n in trained)


def test_frozen_parts_stay_eval(tiny_clip: nn.Module) -> None:
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(norm="LN_clip")).train()
    assert head.mlp.training
    assert not head.proj.training and not head.norm.training
    assert not any(m.training for m in head.vencoder.modules() if list(m.parameters()))


def test_he_init_and_options(tiny_clip: nn.Module) -> None:
    he = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(proj="he"))
    assert not torch.equal(he.proj.weight, tiny_clip.visual.proj)
    two = CLIPSemanticHead(
        16, tiny_clip.visual, HeadSettings(mlp_layers=2, vencoder_blocks=2, norm="GN")
    )
    assert len(two.mlp) == 3 and two.vencoder.num_blocks == 2
    assert two(torch.randn(1, 16, 2, 2)).shape == (1, 32, 2, 2)
    no_res = CLIPSemanticHead(
        16, tiny_clip.visual, HeadSettings(residual=False, norm="none")
    ).eval()
    x = torch.randn(1, 16, 2, 2)
    ref = no_res.proj(no_res.vencoder(no_res.mlp(x.permute(0, 2, 3, 1))))
    torch.testing.assert_close(no_res(x), ref.permute(0, 3, 1, 2))


def test_bad_options_raise(tiny_clip: nn.Module) -> None:
    with pytest.raises(ValueError, match="norm='BatchNorm'"):
        CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(norm="BatchNorm"))
    with pytest.raises(ValueError, match="proj='x'"):
        CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(proj="x"))
    with pytest.raises(ValueError, match=r"expects features \(B, 16, h, w\); got \(1, 8, 2, 2\)"):
        CLIPSemanticHead(16, tiny_clip.visual, HeadSettings())(torch.randn(1, 8, 2, 2))
