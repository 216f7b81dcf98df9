"""CLIP Semantic Head: reference forward, freezing, norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from chimeraseg_test_utils import TINY_CLIP_CONFIG
from open_clip.model import CLIP
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


@pytest.mark.parametrize(
    ("norm", "kind"),
    [
        ("BN", "ChannelLastBatchNorm"),
        ("GN", "ChannelLastGroupNorm"),
        ("LN_clip", "FrozenAwareLayerNorm"),
        ("LN", "LayerNorm"),
        ("none", "Identity"),
    ],
)
def test_each_norm_setting_builds_its_norm(tiny_clip: nn.Module, norm: str, kind: str) -> None:
    """Table IX's norms by name: GN with 32 groups, LN_clip a frozen copy of CLIP's ln_post,
    LN a fresh LayerNorm (weight 1, bias 0) over ``Dv``."""
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(norm=norm))
    assert type(head.norm).__name__ == kind and head.width == 64
    if norm == "GN":
        assert head.norm.num_groups == 32
    if norm == "LN_clip":
        torch.testing.assert_close(head.norm.weight, tiny_clip.visual.ln_post.weight)
        assert not any(p.requires_grad for p in head.norm.parameters())
    if norm == "LN":
        assert torch.equal(head.norm.weight, torch.ones(64))
        assert torch.equal(head.norm.bias, torch.zeros(64))


@pytest.mark.parametrize("branch", ["use_value", "use_ffn"])
def test_branch_settings_reach_the_vencoder(tiny_clip: nn.Module, branch: str) -> None:
    """Table VI: dropping a branch leaves only the other one (plus its residual)."""
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(**{branch: False}))
    block = head.vencoder.blocks[0]
    assert getattr(block, branch) is False
    other = "use_ffn" if branch == "use_value" else "use_value"
    assert getattr(block, other) is True


def test_group_norm_needs_a_width_divisible_by_32() -> None:
    """``Dv = 48``: GN (32 groups) is refused with the width named; BN builds."""
    cfg = {**TINY_CLIP_CONFIG, "vision_cfg": {**TINY_CLIP_CONFIG["vision_cfg"], "width": 48}}
    cfg["vision_cfg"]["head_width"] = 24
    visual = CLIP(**cfg).visual
    with pytest.raises(ValueError, match=r"norm='GN' needs Dv % 32 == 0; Dv = 48"):
        CLIPSemanticHead(16, visual, HeadSettings(norm="GN"))
    assert CLIPSemanticHead(16, visual, HeadSettings(norm="BN")).width == 48


def test_residual_rows_without_a_row_map_in_one_pass(tiny_clip: nn.Module) -> None:
    """``map_residual_rows(F, None, 0)`` is ``Fres`` itself: ``(B, h, w, Dv)``."""
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings()).eval()
    x = torch.randn(2, 16, 3, 4)
    with torch.no_grad():
        fres = head.map_residual_rows(x, None, chunk_tokens=0)
        expected = head.residual_rows(x.permute(0, 2, 3, 1).contiguous())
    assert fres.shape == (2, 3, 4, 64)
    assert torch.equal(fres, expected)


def test_channel_last_group_norm_without_affine() -> None:
    ours = ChannelLastGroupNorm(4, 8, affine=False)
    x = torch.randn(2, 5, 8)
    ref = F.group_norm(x.permute(0, 2, 1), 4, eps=ours.eps).permute(0, 2, 1)
    torch.testing.assert_close(ours(x), ref)
