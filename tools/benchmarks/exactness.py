"""Optimised paths against their reference paths: max |difference|, prediction agreement, speed.

- Folded VEncoder value path (one ``Dv x Dv`` matrix) vs ``out_proj(v_proj(.))`` unfused.
- CSH over chunks of positions (the core's default at inference) vs one pass over all positions.
- Inexact speed option: CSH at stride 8 (2x2-average-pooled decoder output) with the logits
  upsampled, vs the exact stride-4 model (agreement of the per-pixel argmax at full resolution).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.measure import measure
from benchmarks.student import StudentPipeline


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of pixels whose class argmax (dim 1) agrees, for logits ``(B, N, H, W)``."""
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def _timed_pair(fast, ref, device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    t_fast = measure(fast, device, warmup, repeats).median_s
    t_ref = measure(ref, device, warmup, repeats).median_s
    return {"optimised_s": t_fast, "reference_s": t_ref, "speedup": t_ref / t_fast}


def check_value_folding(
    pipe: StudentPipeline, fp: torch.Tensor, warmup: int, repeats: int
) -> dict[str, Any]:
    """Folded vs unfused value branch of every VEncoder block on ``fp (B, h, w, Dv)``."""
    out: dict[str, Any] = {"blocks": []}
    x = fp
    for block in pipe.csh.vencoder.blocks:
        if not block.use_value:
            continue

        def unfused(block=block, x=x) -> torch.Tensor:
            return block.ls_1(block.out_proj(block.v_proj(block.ln_1(x))))

        def folded(block=block, x=x) -> torch.Tensor:
            return block.value_branch(x)

        diff = float((folded() - unfused()).abs().max())
        out["blocks"].append(
            {"max_abs_diff": diff, **_timed_pair(folded, unfused, fp.device, warmup, repeats)}
        )
        x = block(x)
    out["max_abs_diff"] = max((b["max_abs_diff"] for b in out["blocks"]), default=0.0)
    out["exact_within_1e-4"] = out["max_abs_diff"] <= 1e-4
    return out


def check_chunking(
    pipe: StudentPipeline, images: torch.Tensor, warmup: int, repeats: int, exact_s: float
) -> dict[str, Any]:
    """The core's chunked CSH (default) vs one pass over all positions (``chunk_tokens=0``).

    ``exact_s`` is the default (chunked) model's median time on ``images`` from the throughput
    section of the same run.
    """
    chunked, whole = pipe(images), pipe(images, chunk_tokens=0)
    t_whole = measure(lambda: pipe(images, chunk_tokens=0), images.device, warmup, repeats)
    return {
        "chunk_tokens": pipe.model.inference.chunk_tokens,
        "max_abs_diff": float((chunked - whole).abs().max()),
        "agreement": _agreement(chunked, whole),
        "optimised_s": exact_s,
        "reference_s": t_whole.median_s,
        "speedup": t_whole.median_s / exact_s,
    }


def check_stride8(
    pipe: StudentPipeline, images: torch.Tensor, warmup: int, repeats: int, exact_s: float
) -> dict[str, Any]:
    """Inexact option (CSH at stride 8) vs the exact model: argmax agreement and speed.

    ``exact_s`` is the exact model's median time on the same ``images`` from the throughput
    section of the same run (not re-measured, to keep the run short).
    """
    exact = pipe(images)
    fast = pipe(images, head_stride=8)
    t_fast = measure(lambda: pipe(images, head_stride=8), images.device, warmup, repeats).median_s
    return {
        "agreement": _agreement(fast, exact),
        "max_abs_diff": float((fast - exact).abs().max()),
        "optimised_s": t_fast,
        "reference_s": exact_s,
        "speedup": exact_s / t_fast,
    }
