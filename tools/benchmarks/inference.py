"""Section 1-2: whole-image inference throughput, stage breakdown and exactness checks."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import torch
from torch import nn

from benchmarks.baseline import MaskCLIPDense
from benchmarks.breakdown import count_flops, stage_breakdown, stage_inputs
from benchmarks.clip_setup import Vocabulary
from benchmarks.exactness import (
    check_chunking,
    check_stride8,
    check_value_folding,
)
from benchmarks.measure import measure
from benchmarks.student import StudentPipeline


def autocast(args: argparse.Namespace, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``--amp`` is given, else a no-op context."""
    if args.amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _images(batch: int, size: int, device: torch.device, seed: int) -> torch.Tensor:
    """Random RGB images ``(B, 3, size, size)`` in 0..255."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=gen) * 255.0).to(device)


def _throughput(
    model: nn.Module, images: torch.Tensor, args: argparse.Namespace
) -> dict[str, float | None]:
    m = measure(lambda: model(images), images.device, args.warmup, args.repeats)
    return {
        "images_per_s": images.shape[0] / m.median_s,
        "median_s": m.median_s,
        "peak_mem_mb": m.peak_mem_mb,
        "mem_method": m.mem_method,
    }


def _add_rate(entry: dict[str, Any], gflop_per_image: float, gemm_gflops: float) -> None:
    """Adds the achieved GFLOP/s of a whole model and its fraction of the machine's GEMM rate."""
    entry["achieved_gflops"] = gflop_per_image * entry["images_per_s"]
    entry["fraction_of_gemm"] = entry["achieved_gflops"] / gemm_gflops


def run_inference(
    args: argparse.Namespace, clip_model: nn.Module, vocab: Vocabulary, device: torch.device
) -> dict[str, Any]:
    """Images/s and peak memory of every student vs the MaskCLIP baseline, per batch size.

    Returns:
        ``{"baseline": {batch: {...}}, "models": {name: {batch: {..., "ratio_vs_baseline"}}},
        "breakdown": {name: ...}, "exactness": {name: ...}}`` (batch sizes as string keys).
    """
    baseline = MaskCLIPDense(clip_model, vocab.text).to(device)
    pipes = {name: StudentPipeline(name, clip_model, vocab).to(device) for name in args.models}
    out: dict[str, Any] = {"baseline": {}, "models": {n: {} for n in pipes}}
    with torch.inference_mode(), autocast(args, device):
        one = _images(1, args.size, device, args.seed)
        gflop = {"baseline": count_flops(lambda: baseline(one)) / 1e9}
        gflop |= {n: count_flops(lambda p=p: p(one)) / 1e9 for n, p in pipes.items()}
        out["gflop_per_image"] = gflop
        for batch in sorted(set(args.batches) | {1}):  # batch 1 feeds the checks below
            images = _images(batch, args.size, device, args.seed)
            base = _throughput(baseline, images, args)
            _add_rate(base, gflop["baseline"], args.gemm_gflops)
            out["baseline"][str(batch)] = base
            for name, pipe in pipes.items():
                res = _throughput(pipe, images, args)
                res["ratio_vs_baseline"] = res["images_per_s"] / base["images_per_s"]
                _add_rate(res, gflop[name], args.gemm_gflops)
                out["models"][name][str(batch)] = res
            del images
        out["breakdown"], out["exactness"] = {}, {}
        images = _images(1, args.size, device, args.seed)
        for name, pipe in pipes.items():
            out["breakdown"][name] = stage_breakdown(
                pipe, images, args.warmup, args.repeats, args.gemm_gflops
            )
            t = stage_inputs(pipe, images)
            exact_s = out["models"][name]["1"]["median_s"]
            out["exactness"][name] = {
                "value_folding": check_value_folding(pipe, t["fp"], args.warmup, args.repeats),
                "chunking": check_chunking(pipe, images, args.warmup, args.repeats, exact_s),
                "stride8_inexact": check_stride8(pipe, images, args.warmup, args.repeats, exact_s),
            }
            del t
    return out


def rescale_fractions(inference: dict[str, Any], factor: float) -> None:
    """Multiplies every ``fraction_of_gemm`` of the breakdown by ``factor`` (new GEMM reference)."""
    entries = [*inference["baseline"].values()]
    for per_batch in inference["models"].values():
        entries += per_batch.values()
    for b in inference["breakdown"].values():
        entries += [*b["stages"].values(), b["csh"], b["decoder"]]
    for entry in entries:
        entry["fraction_of_gemm"] *= factor
