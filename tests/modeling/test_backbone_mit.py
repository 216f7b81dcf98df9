"""MiT backbone: configs, output sizes, official key names, efficient attention vs a reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from chimeraseg.modeling.backbone import build_mit, get_mit_config, mit_decoder_dim
from chimeraseg.modeling.backbone.layers import DropPath
from chimeraseg.modeling.backbone.mit import EfficientSelfAttention

# SegFormer paper, Table 1: encoder parameters (millions) of MiT-B0...B5.
PAPER_ENCODER_PARAMS_M = {"b0": 3.4, "b1": 13.1, "b2": 24.2, "b3": 44.0, "b4": 60.8, "b5": 81.4}


@pytest.fixture(scope="module")
def mit_b4() -> torch.nn.Module:
    return build_mit("b4").eval()


@pytest.mark.parametrize(
    ("variant", "dims", "depths", "decoder_dim"),
    [
        ("b0", (32, 64, 160, 256), (2, 2, 2, 2), 256),
        ("b1", (64, 128, 320, 512), (2, 2, 2, 2), 256),
        ("b2", (64, 128, 320, 512), (3, 4, 6, 3), 768),
        ("b3", (64, 128, 320, 512), (3, 4, 18, 3), 768),
        ("b4", (64, 128, 320, 512), (3, 8, 27, 3), 768),
        ("b5", (64, 128, 320, 512), (3, 6, 40, 3), 768),
    ],
)
def test_variant_hyperparameters(variant, dims, depths, decoder_dim):
    cfg = get_mit_config(variant)
    assert cfg.embed_dims == dims and cfg.depths == depths
    assert cfg.num_heads == (1, 2, 5, 8) and cfg.sr_ratios == (8, 4, 2, 1) and cfg.mlp_ratio == 4
    assert mit_decoder_dim(variant) == decoder_dim == mit_decoder_dim(f"mit_{variant}")
    with torch.device("meta"):
        model = build_mit(variant)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert params_m == pytest.approx(PAPER_ENCODER_PARAMS_M[variant], rel=0.03)
    assert len(model.block3) == depths[2] and model.out_channels["res5"] == dims[3]


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="'b9'"):
        build_mit("b9")


def test_official_key_names_and_norm_eps():
    model = build_mit("b0")
    keys = set(model.state_dict())
    for key in [
        "patch_embed1.proj.weight",
        "patch_embed1.norm.bias",
        "patch_embed4.proj.weight",
        "block1.0.norm1.weight",
        "block1.0.attn.q.weight",
        "block1.0.attn.q.bias",
        "block1.0.attn.kv.weight",
        "block1.0.attn.sr.weight",
        "block1.0.attn.norm.weight",
        "block1.0.attn.proj.bias",
        "block1.1.mlp.fc1.weight",
        "block1.0.mlp.dwconv.dwconv.weight",
        "block2.1.mlp.fc2.bias",
        "norm1.weight",
        "norm4.bias",
    ]:
        assert key in keys, key
    assert "block4.0.attn.sr.weight" not in keys  # sr ratio 1 in stage 4: no reduction
    assert not any(k.startswith("head.") for k in keys)
    assert model.norm1.eps == 1e-6 and model.block1[0].norm1.eps == 1e-6
    assert model.patch_embed1.norm.eps == 1e-5 and model.block1[0].attn.norm.eps == 1e-5


def test_drop_path_rates_grow_linearly_to_the_maximum():
    model = build_mit("b0", drop_path_rate=0.1)
    rates = [b.drop_path.drop_prob for i in range(1, 5) for b in getattr(model, f"block{i}")]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    assert all(b > a for a, b in zip(rates, rates[1:]))


def _expected_sizes(height: int, width: int) -> dict[str, tuple[int, int]]:
    return {
        name: (math.ceil(height / s), math.ceil(width / s))
        for name, s in zip(("res2", "res3", "res4", "res5"), (4, 8, 16, 32))
    }


@pytest.mark.parametrize("size", [(512, 512), (200, 249)])
def test_b0_output_shapes(size):
    model = build_mit("b0").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, hw in _expected_sizes(*size).items():
        assert out[name].shape == (2, model.out_channels[name], *hw), name
    assert model.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


@pytest.mark.parametrize("size", [(512, 512), (200, 249)])
def test_b4_output_shapes(mit_b4, size):
    with torch.no_grad():
        out = mit_b4(torch.randn(1, 3, *size))
    for name, hw in _expected_sizes(*size).items():
        assert out[name].shape == (1, mit_b4.out_channels[name], *hw), name
        assert torch.isfinite(out[name]).all()


def test_too_small_input_is_rejected_with_its_size():
    model = build_mit("b0").eval()
    with pytest.raises(ValueError, match=r"\(28, 64\)"):
        model(torch.randn(1, 3, 28, 64))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 29, 29))["res5"].shape[-2:] == (1, 1)


def _reference_attention(attn: EfficientSelfAttention, x: torch.Tensor, h: int, w: int):
    """softmax(Q K^T / sqrt(d)) V per head; keys/values from an explicit window-sum reduction."""
    b, n, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    q = x @ attn.q.weight.T + attn.q.bias
    kv_in = x
    s = attn.sr_ratio
    if s > 1:
        grid = x.reshape(b, h, w, c)
        rows = []
        for i in range(h // s):
            for j in range(w // s):
                window = grid[:, i * s : (i + 1) * s, j * s : (j + 1) * s, :]  # (B, s, s, C)
                # weight (C_out, C_in, s, s): out[o] = sum_{y,x,c} window[y, x, c] W[o, c, y, x]
                rows.append(torch.einsum("byxc,ocyx->bo", window, attn.sr.weight) + attn.sr.bias)
        reduced = torch.stack(rows, dim=1)  # (B, M, C)
        mean = reduced.mean(-1, keepdim=True)
        var = reduced.var(-1, unbiased=False, keepdim=True)
        kv_in = (reduced - mean) / torch.sqrt(var + attn.norm.eps) * attn.norm.weight
        kv_in = kv_in + attn.norm.bias
    k = kv_in @ attn.kv.weight[:c].T + attn.kv.bias[:c]
    v = kv_in @ attn.kv.weight[c:].T + attn.kv.bias[c:]
    out = torch.empty_like(q)
    for head in range(heads):
        sl = slice(head * d, (head + 1) * d)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d)  # (B, N, M)
        out[..., sl] = torch.softmax(scores, dim=-1) @ v[..., sl]
    return out @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize(("sr_ratio", "h", "w"), [(4, 13, 10), (2, 7, 9), (1, 5, 6)])
def test_efficient_attention_matches_reference(sr_ratio, h, w):
    attn = EfficientSelfAttention(dim=20, num_heads=2, sr_ratio=sr_ratio).double()
    for p in attn.parameters():  # non-trivial LayerNorm/bias values too
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, h * w, 20, dtype=torch.float64)
    expected = _reference_attention(attn, x, h, w)
    torch.testing.assert_close(attn(x, h, w), expected, rtol=1e-10, atol=1e-10)


def test_drop_path_is_per_sample_and_identity_in_eval():
    layer = DropPath(0.5)
    x = torch.ones(64, 3, 4)
    out = layer(x)
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample.amin(1) == per_sample.amax(1)).all()
    assert torch.equal(layer.eval()(x), x)
    with pytest.raises(ValueError, match="1.0"):
        DropPath(1.0)


def test_attention_reference_helper_detects_a_wrong_scale():
    """The reference is sensitive: a wrong softmax scale changes the output."""
    attn = EfficientSelfAttention(dim=8, num_heads=2, sr_ratio=2).double()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(1, 16, 8, dtype=torch.float64)
    expected = _reference_attention(attn, x, 4, 4)
    with torch.no_grad():
        attn.q.weight.mul_(2.0)
        attn.q.bias.mul_(2.0)
    assert not torch.allclose(attn(x, 4, 4), expected)
    assert F.mse_loss(attn(x, 4, 4), _reference_attention(attn, x, 4, 4)) < 1e-20
