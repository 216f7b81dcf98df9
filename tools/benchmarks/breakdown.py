"""Where inference time goes, stage by stage, and how close each stage runs to the machine's GEMM.

Each stage is timed on its own precomputed input (median of N after warm-up). FLOPs are counted
analytically at the ATen level by :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls,
convolutions, attention: 2 FLOPs per multiply-add; element-wise ops count 0), so "achieved GFLOP/s"
is GEMM-work per second and directly comparable with the dense-matmul GFLOP/s of the same run.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from benchmarks.measure import measure
from benchmarks.student import StudentPipeline

CSH_STAGES = ("csh_mlp", "csh_vencoder", "csh_norm_residual", "csh_projection")


def _cpu_sdpa_flops(query, key, value, *args: object, out_shape=None, **kwargs: object) -> int:
    """FLOPs of CPU flash attention ``(B, H, L, E)``: ``QKᵀ`` and ``AV`` (torch counts only GPU)."""
    return sdpa_flop_count(query, key, value)


# Attention kernels FlopCounterMode has no formula for on CPU (it would count them as 0).
_CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_flops(fn: Callable[[], object]) -> int:
    """GEMM/conv/attention FLOPs of one call of ``fn`` (2 per multiply-add).

    ``nn.MultiheadAttention``'s inference fast path (one fused ATen op the counter does not know)
    is switched off while counting, so CLIP's attention is counted like any other matmul; CPU
    flash attention gets the standard SDPA formula.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def stage_inputs(pipe: StudentPipeline, images: torch.Tensor) -> dict[str, Any]:
    """Runs the pipeline once and keeps every intermediate tensor."""
    csh = pipe.csh
    x = (images - pipe.mean) / pipe.std  # (B, 3, H, W) ImageNet-normalised
    feats = pipe.backbone(x)  # {"res2": (B, C1, H/4, W/4), ...}
    f = pipe.decoder(feats)  # (B, E, h, w)
    fp = csh.mlp(f.permute(0, 2, 3, 1).contiguous())  # (B, h, w, Dv)
    fv = csh.vencoder(fp)
    fres = fp + csh.norm(fv)
    fc = csh.proj(fres)  # (B, h, w, D)
    logits = pipe.classify(fc)  # (B, N, h, w)
    return dict(x=x, feats=feats, f=f, fp=fp, fv=fv, fres=fres, fc=fc, logits=logits)


def stage_functions(
    pipe: StudentPipeline, images: torch.Tensor
) -> dict[str, Callable[[], torch.Tensor]]:
    """One closure per stage, each on the previous stage's stored output."""
    t = stage_inputs(pipe, images)
    csh, size = pipe.csh, tuple(images.shape[-2:])
    return {
        "backbone": lambda: pipe.backbone((images - pipe.mean) / pipe.std),
        "decoder": lambda: pipe.decoder(t["feats"]),
        # includes the (B, E, h, w) -> (B, h, w, E) layout change the CSH does
        "csh_mlp": lambda: csh.mlp(t["f"].permute(0, 2, 3, 1).contiguous()),
        "csh_vencoder": lambda: csh.vencoder(t["fp"]),
        "csh_norm_residual": lambda: t["fp"] + csh.norm(t["fv"]),
        "csh_projection": lambda: csh.proj(t["fres"]),
        "classification": lambda: pipe.classify(t["fc"]),
        "upsampling": lambda: pipe.upsample(t["logits"], size),
    }


def _rate(flops: int, seconds: float, gemm_gflops: float) -> dict[str, float]:
    gflops = flops / seconds / 1e9 if seconds > 0 else 0.0
    return {"gflop": flops / 1e9, "gflops": gflops, "fraction_of_gemm": gflops / gemm_gflops}


def stage_breakdown(
    pipe: StudentPipeline,
    images: torch.Tensor,
    warmup: int,
    repeats: int,
    gemm_gflops: float,
) -> dict[str, Any]:
    """Times every stage and reports its share of the total and its achieved GFLOP/s.

    Args:
        pipe: The student pipeline (eval mode).
        images: ``(B, 3, H, W)`` 0..255 input.
        warmup: Untimed calls per stage.
        repeats: Timed calls per stage (median reported).
        gemm_gflops: The machine's dense-matmul GFLOP/s from the same run.

    Returns:
        ``{"stages": {name: {median_s, share, gflop, gflops, fraction_of_gemm}},
        "csh": {...}, "decoder": {...}, "total_s"}``.
    """
    device = images.device
    stages: dict[str, dict[str, float]] = {}
    for name, fn in stage_functions(pipe, images).items():
        m = measure(fn, device, warmup, repeats)
        stages[name] = {"median_s": m.median_s, **_rate(count_flops(fn), m.median_s, gemm_gflops)}
    total = sum(s["median_s"] for s in stages.values())
    for s in stages.values():
        s["share"] = s["median_s"] / total
    csh_s = sum(stages[n]["median_s"] for n in CSH_STAGES)
    csh_flop = sum(stages[n]["gflop"] for n in CSH_STAGES) * 1e9
    return {
        "stages": stages,
        "csh": {"median_s": csh_s, **_rate(int(csh_flop), csh_s, gemm_gflops)},
        "decoder": {k: v for k, v in stages["decoder"].items() if k != "share"},
        "total_s": total,
    }
