"""Section 1-2: whole-image inference throughput per precision, stage profiles, exactness checks.

Every ratio compares models at the same precision: ChimeraSeg in bf16 runs the core's
``TEST.AMP`` path (:class:`~chimeraseg.modeling.InferenceConfig` ``precision``) and the baseline
runs under the same bf16 autocast, both with the cosine in float32. All models and precisions of
one batch size are timed in the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from benchmarks.baseline import MaskCLIPDense
from benchmarks.breakdown import count_flops, stage_breakdown, stage_inputs
from benchmarks.clip_setup import Vocabulary
from benchmarks.exactness import check_chunking, check_stride8, check_value_folding
from benchmarks.measure import measure
from benchmarks.stages import (
    StageTimer,
    baseline_stages,
    per_image_ms,
    student_stages,
    time_upsampling,
)
from benchmarks.student import StudentPipeline

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The baseline's autocast for ``precision`` (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _images(batch: int, size: int, device: torch.device, seed: int) -> torch.Tensor:
    """Random RGB images ``(B, 3, size, size)`` in 0..255."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=gen) * 255.0).to(device)


def _rounds(
    calls: dict[tuple[str, str], Callable[[], torch.Tensor]],
    timers: dict[str, StageTimer],
    batch: int,
    args: argparse.Namespace,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Times every ``(model, precision)`` call once per round, round after round.

    All models and precisions of one batch size share the rounds, so every ratio (vs the
    baseline, bf16 vs fp32) compares calls made a few seconds apart under the same load. The
    stage profile of each call is read from its model's hooks right after it.
    """
    device = torch.device(args.device)
    for _ in range(args.warmup):
        for fn in calls.values():
            fn()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    stages: dict[tuple[str, str], dict[str, float]] = {key: {} for key in calls}
    peaks: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    mem_method = "none"
    for _ in range(args.repeats):
        for key, fn in calls.items():
            timer = timers[key[0]]
            timer.reset()
            m = measure(fn, device, 0, 1)
            times[key].append(m.median_s)
            for name, seconds in timer.seconds.items():  # summed over rounds, in call order
                stages[key][name] = stages[key].get(name, 0.0) + seconds
            if m.peak_mem_mb is not None:
                peaks[key].append(m.peak_mem_mb)
            mem_method = m.mem_method
    return {
        key: {
            "images_per_s": batch / statistics.median(times[key]),
            "median_s": statistics.median(times[key]),
            "mean_s": sum(times[key]) / len(times[key]),
            "times_s": times[key],
            "peak_mem_mb": max(peaks[key]) if peaks[key] else None,
            "mem_method": mem_method,
            "stages_ms_per_image": per_image_ms(stages[key], args.repeats, batch, sum(times[key])),
        }
        for key in calls
    }


def _agreement(calls: dict[tuple[str, str], Callable[[], torch.Tensor]]) -> dict[str, float]:
    """Argmax agreement of each model's bf16 call with its fp32 call (same inputs)."""
    agreement = {}
    for name in dict.fromkeys(name for name, _ in calls):
        same = calls[(name, "fp32")]().argmax(1) == calls[(name, "bf16")]().argmax(1)  # (B, H, W)
        agreement[name] = float(same.float().mean())
    return agreement


def _add_rate(entry: dict[str, Any], gflop_per_image: float, gemm_gflops: float) -> None:
    """Adds the achieved GFLOP/s of a whole model and its fraction of the machine's GEMM rate."""
    entry["achieved_gflops"] = gflop_per_image * entry["images_per_s"]
    entry["fraction_of_gemm"] = entry["achieved_gflops"] / gemm_gflops


def _exactness(
    pipes: dict[str, StudentPipeline], args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-stage GFLOP/s (batch 1) and the exactness checks of every student."""
    breakdown, exactness = {}, {}
    images = _images(1, args.size, torch.device(args.device), args.seed)
    for name, pipe in pipes.items():
        breakdown[name] = stage_breakdown(pipe, images, args.warmup, args.repeats, args.gemm_gflops)
        t = stage_inputs(pipe, images)
        exactness[name] = {
            "value_folding": check_value_folding(pipe, t["fp"], args.warmup, args.repeats),
            "chunking": check_chunking(pipe, images, args.warmup, args.repeats),
            "stride8_inexact": check_stride8(pipe, images, args.warmup, args.repeats),
        }
        del t
    return breakdown, exactness


def run_inference(
    args: argparse.Namespace,
    clip_model: nn.Module,
    vocab: Vocabulary,
    device: torch.device,
    gemm_gflops: dict[str, float],
) -> dict[str, Any]:
    """Images/s, peak memory and stage profile of every student and the baseline, per precision.

    With both fp32 and bf16, ``"bf16_vs_fp32"`` holds each model's speed-up per batch size and
    its batch-1 argmax agreement (random student weights: a lower bound of what trained models
    show; ``tools/inference_agreement.py`` measures a trained one).

    Args:
        gemm_gflops: the machine's dense GEMM GFLOP/s per precision (``"fp32"``, ``"bf16"``).

    Returns:
        ``{precision: {"precision", "baseline": {batch: {...}}, "models": {name: {batch: {...,
        "ratio_vs_baseline"}}}, "upsampling": {batch: {...}}, "gflop_per_image"}}`` (batch sizes
        as string keys), the first precision also with ``"breakdown"`` and ``"exactness"``; and
        ``"bf16_vs_fp32"`` as above.
    """
    baseline = MaskCLIPDense(clip_model, vocab.text).to(device)
    pipes = {name: StudentPipeline(name, clip_model, vocab).to(device) for name in args.models}
    timers = {"baseline": StageTimer(baseline_stages(baseline))}
    timers |= {name: StageTimer(student_stages(pipe.model)) for name, pipe in pipes.items()}
    out: dict[str, Any] = {
        p: {"precision": p, "baseline": {}, "upsampling": {}, "models": {n: {} for n in pipes}}
        for p in args.precisions
    }

    compare = {"fp32", "bf16"} <= set(args.precisions)

    def run_baseline(images: torch.Tensor, precision: str) -> torch.Tensor:
        with _autocast(precision, device):
            return baseline(images)

    with torch.inference_mode():
        one = _images(1, args.size, device, args.seed)
        gflop = {"baseline": count_flops(lambda: baseline(one)) / 1e9}
        gflop |= {n: count_flops(lambda p=p: p(one)) / 1e9 for n, p in pipes.items()}
        for batch in sorted(set(args.batches) | {1}):  # batch 1 feeds the checks below
            images = _images(batch, args.size, device, args.seed)
            calls: dict[tuple[str, str], Callable[[], torch.Tensor]] = {}
            for precision in args.precisions:
                calls[("baseline", precision)] = partial(run_baseline, images, precision)
                for name, pipe in pipes.items():
                    calls[(name, precision)] = partial(
                        pipe, images, precision=PRECISIONS[precision]
                    )
            results = _rounds(calls, timers, batch, args)
            upsampling = time_upsampling(
                batch, len(vocab.names), args.size // 4, args.size, device, args.repeats
            )
            for precision in args.precisions:
                base = results[("baseline", precision)]
                _add_rate(base, gflop["baseline"], gemm_gflops[precision])
                out[precision]["baseline"][str(batch)] = base
                for name in pipes:
                    res = results[(name, precision)]
                    res["ratio_vs_baseline"] = res["images_per_s"] / base["images_per_s"]
                    _add_rate(res, gflop[name], gemm_gflops[precision])
                    out[precision]["models"][name][str(batch)] = res
                out[precision]["upsampling"][str(batch)] = upsampling
            if batch == 1 and compare:
                agreement = _agreement(calls)
            del images, calls
        for timer in timers.values():
            timer.remove()
        if compare:
            out["bf16_vs_fp32"] = _precision_comparison(out, agreement)
        first = args.precisions[0]
        for precision in args.precisions:
            out[precision]["gflop_per_image"] = gflop
        check_args = argparse.Namespace(**vars(args))
        check_args.gemm_gflops = gemm_gflops[first]
        with _autocast(first, device):
            out[first]["breakdown"], out[first]["exactness"] = _exactness(pipes, check_args)
    return out


def _precision_comparison(out: dict[str, Any], agreement: dict[str, float]) -> dict[str, Any]:
    """bf16 vs fp32 images/s per model and batch size, and the batch-1 agreement."""
    speedup: dict[str, dict[str, float]] = {}
    for name in [*out["fp32"]["models"], "baseline"]:
        fp32 = out["fp32"]["baseline"] if name == "baseline" else out["fp32"]["models"][name]
        bf16 = out["bf16"]["baseline"] if name == "baseline" else out["bf16"]["models"][name]
        speedup[name] = {b: bf16[b]["images_per_s"] / r["images_per_s"] for b, r in fp32.items()}
    return {"speedup": speedup, "argmax_agreement": agreement}


def rescale_fractions(inference: dict[str, Any], factor: float) -> None:
    """Multiplies every ``fraction_of_gemm`` by ``factor`` (new GEMM reference)."""
    entries = [*inference["baseline"].values()]
    for per_batch in inference["models"].values():
        entries += per_batch.values()
    for b in inference.get("breakdown", {}).values():
        entries += [*b["stages"].values(), b["csh"], b["decoder"]]
    for entry in entries:
        entry["fraction_of_gemm"] *= factor
