"""Partial-CLIP modules: VEncoder value path, visual projection and ln_post copies."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from chimeraseg.clip.partial import (
    build_ln_post,
    build_vencoder,
    build_visual_projection,
    fuse_value_projection,
)


def _hand_value_path(block, x, use_value=True, use_ffn=True):
    """Paper §III-B from the block's raw weights: x + out(v(ln_1 x)); then + mlp(ln_2 .)."""
    width = x.shape[-1]
    w_v = block.attn.in_proj_weight[2 * width :]
    b_v = block.attn.in_proj_bias[2 * width :]
    if use_value:
        h = F.layer_norm(x, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        v = h @ w_v.T + b_v
        x = x + (v @ block.attn.out_proj.weight.T + block.attn.out_proj.bias)
    if use_ffn:
        h = F.layer_norm(x, (width,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
        h = h @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + (h @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias)
    return x


def test_vencoder_matches_hand_computation(tiny_clip):
    blocks = tiny_clip.visual.transformer.resblocks
    x = torch.randn(7, 64)
    out = build_vencoder(tiny_clip.visual, num_blocks=1)(x)
    torch.testing.assert_close(out, _hand_value_path(blocks[-1], x), rtol=1e-5, atol=1e-5)


def test_vencoder_last_blocks_in_order(tiny_clip):
    blocks = tiny_clip.visual.transformer.resblocks
    x = torch.randn(5, 64)
    expected = _hand_value_path(blocks[1], _hand_value_path(blocks[0], x))
    out = build_vencoder(tiny_clip.visual, num_blocks=2)(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_value,use_ffn", [(False, True), (True, False), (False, False)])
def test_vencoder_dropped_paths_keep_residual(tiny_clip, use_value, use_ffn):
    block = tiny_clip.visual.transformer.resblocks[-1]
    x = torch.randn(4, 64)
    enc = build_vencoder(tiny_clip.visual, use_value=use_value, use_ffn=use_ffn)
    torch.testing.assert_close(enc(x), _hand_value_path(block, x, use_value, use_ffn))


def test_vencoder_zero_blocks_is_identity(tiny_clip):
    x = torch.randn(3, 64)
    enc = build_vencoder(tiny_clip.visual, num_blocks=0)
    assert enc(x) is x
    assert enc.width == 64 and enc.num_blocks == 0


def test_vencoder_any_leading_shape(tiny_clip):
    enc = build_vencoder(tiny_clip.visual)
    x = torch.randn(2, 3, 5, 64)  # (B, h, w, Dv)
    torch.testing.assert_close(enc(x), enc(x.reshape(-1, 64)).reshape(2, 3, 5, 64))


def test_vencoder_rejects_bad_shapes_and_counts(tiny_clip):
    with pytest.raises(ValueError, match=r"\(\.\.\., 64\)"):
        build_vencoder(tiny_clip.visual)(torch.randn(4, 32))
    with pytest.raises(ValueError, match="num_blocks=3.*2 blocks"):
        build_vencoder(tiny_clip.visual, num_blocks=3)


def test_fused_value_path_equals_unfused_and_refreshes(tiny_clip):
    enc = build_vencoder(tiny_clip.visual)
    block = enc.blocks[0]
    x = torch.randn(6, 64)
    unfused = block.ls_1(block.out_proj(block.v_proj(block.ln_1(x))))
    torch.testing.assert_close(block.value_branch(x), unfused, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        block.v_proj.weight.mul_(2.0)  # in-place change must invalidate the folded matrix
    unfused = block.ls_1(block.out_proj(block.v_proj(block.ln_1(x))))
    torch.testing.assert_close(block.value_branch(x), unfused, rtol=1e-5, atol=1e-5)


def test_fuse_value_projection_with_layer_scale():
    wv, bv, wo, bo, gamma = (torch.randn(8, 8), torch.randn(8), torch.randn(8, 8),
                             torch.randn(8), torch.randn(8))  # fmt: skip
    x = torch.randn(3, 8)
    weight, bias = fuse_value_projection(wv, bv, wo, bo, gamma)
    expected = gamma * ((x @ wv.T + bv) @ wo.T + bo)
    torch.testing.assert_close(F.linear(x, weight, bias), expected, rtol=1e-5, atol=1e-5)


def test_copies_are_independent_of_clip(tiny_clip):
    before = tiny_clip.visual.proj.clone()
    proj = build_visual_projection(tiny_clip.visual, trainable=True)
    with torch.no_grad():
        proj.weight.add_(1.0)
    assert torch.equal(tiny_clip.visual.proj, before)


def test_frozen_parts_get_no_gradient_and_input_does(tiny_clip):
    enc = build_vencoder(tiny_clip.visual)
    proj = build_visual_projection(tiny_clip.visual)
    ln = build_ln_post(tiny_clip.visual)
    x = torch.randn(4, 64, requires_grad=True)
    before = [p.detach().clone() for m in (enc, proj, ln) for p in m.parameters()]
    proj(ln(enc(x))).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for module in (enc, proj, ln):
        assert not any(p.requires_grad for p in module.parameters())
    params = [p for m in (enc, proj, ln) for p in m.parameters()]
    torch.optim.SGD([*params, x], lr=0.1, weight_decay=0.5).step()  # moves only x
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_trainable_options_get_gradients(tiny_clip):
    enc = build_vencoder(tiny_clip.visual, trainable_value=True, trainable_ffn=True)
    proj = build_visual_projection(tiny_clip.visual, trainable=True)
    ln = build_ln_post(tiny_clip.visual, trainable=True)
    proj(ln(enc(torch.randn(4, 64)))).sum().backward()
    block = enc.blocks[0]
    for p in (block.v_proj.weight, block.out_proj.weight, block.mlp.c_fc.weight, proj.weight,
              ln.weight):  # fmt: skip
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_only_value_trainable_leaves_ffn_frozen(tiny_clip):
    enc = build_vencoder(tiny_clip.visual, trainable_value=True)
    enc(torch.randn(2, 64)).sum().backward()
    block = enc.blocks[0]
    assert block.v_proj.weight.grad.abs().sum() > 0
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert "blocks.0.v_proj.weight" in trainable
    assert not any(".mlp." in n or ".ln_2." in n for n in trainable)  # the FFN stays frozen
    assert not block.mlp.c_fc.weight.requires_grad


def test_frozen_modules_stay_eval_under_train(tiny_clip):
    enc = build_vencoder(tiny_clip.visual, trainable_ffn=True)
    proj = build_visual_projection(tiny_clip.visual)
    ln = build_ln_post(tiny_clip.visual)
    for module in (enc, proj, ln):
        module.train()
    block = enc.blocks[0]
    assert not block.v_proj.training and not block.ln_1.training
    assert block.mlp.training
    assert not proj.training and not ln.training
    assert build_visual_projection(tiny_clip.visual, trainable=True).train().training


def test_projection_and_ln_post_equal_clip(tiny_clip):
    visual = tiny_clip.visual
    x = torch.randn(5, 64)
    proj = build_visual_projection(visual)
    ln = build_ln_post(visual)
    assert (proj.width, proj.embed_dim, ln.width) == (64, 32, 64)
    torch.testing.assert_close(proj(ln(x)), visual.ln_post(x) @ visual.proj)


def test_he_init_changes_scale(tiny_clip):
    proj = build_visual_projection(tiny_clip.visual, trainable=True)
    proj.reset_parameters_he()
    assert abs(proj.weight.std().item() - (2.0 / 64) ** 0.5) < 0.05


def test_custom_attention_blocks_are_supported():
    """open_clip's own ``Attention`` (batch-first only) has the same in_proj/out_proj layout."""
    from open_clip.transformer import CustomResidualAttentionBlock

    torch.manual_seed(0)
    block = CustomResidualAttentionBlock(64, 2, ls_init_value=0.5).eval()
    visual = torch.nn.Module()
    visual.transformer = torch.nn.Module()
    visual.transformer.resblocks = torch.nn.ModuleList([block])
    x = torch.randn(3, 64)
    width = 64
    h = (
        block.ln_1(x) @ block.attn.in_proj_weight[2 * width :].T
        + block.attn.in_proj_bias[2 * width :]
    )
    y = x + block.ls_1(block.attn.out_proj(h))
    y = y + block.ls_2(block.mlp(block.ln_2(y)))
    torch.testing.assert_close(build_vencoder(visual)(x), y, rtol=1e-5, atol=1e-5)


def test_unsupported_attention_features_raise():
    from open_clip.transformer import CustomResidualAttentionBlock

    block = CustomResidualAttentionBlock(64, 2, scale_heads=True)
    visual = torch.nn.Module()
    visual.transformer = torch.nn.Module()
    visual.transformer.resblocks = torch.nn.ModuleList([copy.deepcopy(block)])
    with pytest.raises(NotImplementedError, match="head_scale"):
        build_vencoder(visual)
