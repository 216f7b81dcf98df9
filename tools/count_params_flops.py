"""Parameters and GFLOPs of the student networks (backbone + SegFormer decoder) at 512x512.

Usage::

    python tools/count_params_flops.py                    # MiT-B0, MiT-B4, ViT-B/16 at 512x512
    python tools/count_params_flops.py --models b2 --size 640 640

FLOPs are counted by fvcore's ``FlopCountAnalysis`` (one FLOP per multiply-add, as in the
SegFormer paper's tables). fvcore has no rule for ``scaled_dot_product_attention``; this tool adds
one (``B * heads * N * M * (d_qk + d_v)``) and prints GFLOPs both with and without those attention
products, because mmcv's ``get_flops``, used for the published numbers, counts modules only and
skips the attention matrix products. The decoder here has no classifier (the paper's has a 1x1
conv E -> 150 classes, about 0.04M parameters and 0.6 GFLOPs for E = 256 at 512x512).

Published figures for comparison (SegFormer, Xie et al., NeurIPS 2021, Table 1/2, ADE20K at
512x512, encoder + decoder): MiT-B0 3.8M parameters / 8.4 GFLOPs; MiT-B4 64.1M / 95.7 GFLOPs.
The paper lists encoder parameters alone as 3.4M (B0) and 60.8M (B4). Expect GFLOPs a little
below the published ones even after adding the classifier: fvcore does not count element-wise
operations (additions, GELU, dropout, padding, pooling, resizing), which mmcv partly counts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from chimeraseg.modeling.backbone import build_student_backbone, student_decoder_dim
from chimeraseg.modeling.decoder import SegFormerDecoder
from chimeraseg.modeling.settings import StudentSettings
from chimeraseg.utils.tool_parser import quiet_import_warnings, tool_parser

EXAMPLES = (
    "python tools/count_params_flops.py",
    "python tools/count_params_flops.py --models b2 --size 640 640",
)

PUBLISHED = {"mit_b0": (3.8, 8.4), "mit_b4": (64.1, 95.7)}  # (M params, GFLOPs), ADE20K 512x512


class Student(nn.Module):
    """Backbone followed by the SegFormer decoder: `(B, 3, H, W) -> (B, E, H/4, W/4)`."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.backbone = build_student_backbone(name, drop_path_rate=0.0)
        dim, dropout = student_decoder_dim(name), StudentSettings().decoder_dropout
        self.decoder = SegFormerDecoder(self.backbone.out_channels, dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(x))


def sdpa_flop(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for `aten::scaled_dot_product_attention`: Q K^T plus attention times V."""
    from fvcore.nn.jit_handles import get_shape

    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])  # (B, heads, N|M, d)
    batch_heads = math.prod(q_shape[:-2])
    n, d_qk = q_shape[-2:]
    m, d_v = k_shape[-2], v_shape[-1]
    return batch_heads * n * m * (d_qk + d_v)


def count(name: str, size: tuple[int, int]) -> dict[str, float]:
    """Parameters (M) and GFLOPs with/without attention products for one student."""
    quiet_import_warnings(("fvcore.nn",))  # its import warns; imported here, quietly, once
    from fvcore.nn import FlopCountAnalysis

    model = Student(name).eval()
    image = torch.zeros(1, 3, *size)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    backbone_params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, image)
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analysis.total() / 1e9
        by_op = analysis.by_operator()
    attention = by_op.get("scaled_dot_product_attention", 0) / 1e9
    return {
        "params_m": params,
        "backbone_params_m": backbone_params,
        "gflops": total,
        "gflops_without_attention": total - attention,
        "unsupported": ", ".join(sorted(analysis.unsupported_ops())),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = tool_parser(__doc__.splitlines()[0], EXAMPLES)
    parser.add_argument(
        "--models", nargs="+", default=["mit_b0", "mit_b4", "vit_b16"],
        help="student backbones, e.g. mit_b2 or b2 (default: mit_b0 mit_b4 vit_b16)",
    )  # fmt: skip
    parser.add_argument(
        "--size", nargs=2, type=int, default=[512, 512], metavar=("H", "W"),
        help="input height and width (default: 512 512)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
    size = (args.size[0], args.size[1])
    header = (
        f"{'model':8} {'params(M)':>9} {'backbone(M)':>11} {'GFLOPs':>8} "
        f"{'GFLOPs w/o attn':>15} {'paper M/GFLOPs':>14}"
    )
    print(f"input {size[0]}x{size[1]}, backbone + SegFormer decoder (no classifier)")
    print(header)
    for name in args.models:
        key = name if name.startswith(("mit_", "vit")) else f"mit_{name}"
        r = count(key, size)
        paper = PUBLISHED.get(key)
        paper_text = f"{paper[0]} / {paper[1]}" if paper and size == (512, 512) else "-"
        print(
            f"{key:8} {r['params_m']:9.2f} {r['backbone_params_m']:11.2f} {r['gflops']:8.1f} "
            f"{r['gflops_without_attention']:15.1f} {paper_text:>14}"
        )
        if r["unsupported"]:
            print(f"  (not counted by fvcore: {r['unsupported']})")


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/count_params_flops.py")
