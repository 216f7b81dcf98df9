"""tools/count_params_flops.py: the attention FLOP rule and a small end-to-end count."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from chimeraseg_test_utils import load_script
from fvcore.nn import FlopCountAnalysis

from chimeraseg.modeling.backbone import build_mit


def _tool():
    return load_script("tools/count_params_flops.py")


class _Sdpa(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class _ExplicitAttention(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v


def test_sdpa_rule_equals_fvcore_count_of_explicit_matmuls():
    tool = _tool()
    q, k, v = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 5)
    sdpa = FlopCountAnalysis(_Sdpa(), (q, k, v))
    sdpa.set_op_handle("aten::scaled_dot_product_attention", tool.sdpa_flop)
    explicit = FlopCountAnalysis(_ExplicitAttention(), (q, k, v))
    assert sdpa.total() == explicit.total() == 2 * 3 * 10 * 6 * (4 + 5)


def test_count_small_mit_b0():
    result = _tool().count("mit_b0", (64, 64))
    backbone_params = sum(p.numel() for p in build_mit("b0").parameters()) / 1e6
    assert abs(result["backbone_params_m"] - backbone_params) < 1e-9
    assert result["params_m"] > result["backbone_params_m"]
    assert 0 < result["gflops_without_attention"] < result["gflops"]
