"""Section 1-2: whole-image inference throughput per precision, stage profiles, exactness checks.

Every ratio compares models at the same precision: ChimeraSeg in bf16 runs the core's
``TEST.AMP`` path (:class:`~chimeraseg.modeling.InferenceConfig` ``precision``) and the baseline
runs under the same bf16 autocast, both with the cosine in float32.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any, Callable

import torch
from torch import nn

from benchmarks.baseline import MaskCLIPDense
from benchmarks.breakdown import count_flops, stage_breakdown, stage_inputs
from benchmarks.clip_setup import Vocabulary
from benchmarks.exactness import check_chunking, check_stride8, check_value_folding
from benchmarks.measure import measure
from benchmarks.stages import StageTimer, baseline_stages, student_stages, time_upsampling
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


def _throughput(
    fn: Callable[[], torch.Tensor], timer: StageTimer, batch: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Images/s, peak memory and the per-stage profile of the same timed calls."""
    device = torch.device(args.device)
    for _ in range(args.warmup):
        fn()
    timer.reset()
    m = measure(fn, device, 0, args.repeats)
    return {
        "images_per_s": batch / m.median_s,
        "median_s": m.median_s,
        "mean_s": sum(m.times_s) / len(m.times_s),
        "peak_mem_mb": m.peak_mem_mb,
        "mem_method": m.mem_method,
        "stages_ms_per_image": timer.per_image_ms(args.repeats, batch, sum(m.times_s)),
    }


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
    precision: str = "fp32",
    with_checks: bool = True,
) -> dict[str, Any]:
    """Images/s, peak memory and stage profile of every student vs the baseline, per batch.

    Args:
        precision: ``"fp32"`` or ``"bf16"``, for the students and the baseline alike.
        with_checks: also run the batch-1 stage breakdown and the exactness checks.

    Returns:
        ``{"precision", "baseline": {batch: {...}}, "models": {name: {batch: {...,
        "ratio_vs_baseline"}}}, "upsampling": {batch: {...}}, "breakdown", "exactness"}`` (batch
        sizes as string keys; the last two only ``with_checks``).
    """
    dtype = PRECISIONS[precision]
    baseline = MaskCLIPDense(clip_model, vocab.text).to(device)
    pipes = {name: StudentPipeline(name, clip_model, vocab).to(device) for name in args.models}
    timers = {"baseline": StageTimer(baseline_stages(baseline))}
    timers |= {name: StageTimer(student_stages(pipe.model)) for name, pipe in pipes.items()}
    out: dict[str, Any] = {"precision": precision, "baseline": {}, "upsampling": {}}
    out["models"] = {n: {} for n in pipes}

    def run_baseline(images: torch.Tensor) -> torch.Tensor:
        with _autocast(precision, device):
            return baseline(images)

    with torch.inference_mode():
        one = _images(1, args.size, device, args.seed)
        gflop = {"baseline": count_flops(lambda: baseline(one)) / 1e9}
        gflop |= {n: count_flops(lambda p=p: p(one)) / 1e9 for n, p in pipes.items()}
        out["gflop_per_image"] = gflop
        for batch in sorted(set(args.batches) | {1}):  # batch 1 feeds the checks below
            images = _images(batch, args.size, device, args.seed)
            base = _throughput(lambda x=images: run_baseline(x), timers["baseline"], batch, args)
            _add_rate(base, gflop["baseline"], args.gemm_gflops)
            out["baseline"][str(batch)] = base
            for name, pipe in pipes.items():
                res = _throughput(
                    lambda p=pipe, x=images: p(x, precision=dtype), timers[name], batch, args
                )
                res["ratio_vs_baseline"] = res["images_per_s"] / base["images_per_s"]
                _add_rate(res, gflop[name], args.gemm_gflops)
                out["models"][name][str(batch)] = res
            out["upsampling"][str(batch)] = time_upsampling(
                batch, len(vocab.names), args.size // 4, args.size, device, args.repeats
            )
            del images
        for timer in timers.values():
            timer.remove()
        if with_checks:
            with _autocast(precision, device):
                out["breakdown"], out["exactness"] = _exactness(pipes, args)
    return out


def precision_agreement(
    args: argparse.Namespace, clip_model: nn.Module, vocab: Vocabulary, device: torch.device
) -> dict[str, float]:
    """Argmax agreement of bf16 with fp32 per model on the benchmark's batch-1 image.

    With random student weights this is a lower bound of what trained models show (their
    logits are better separated); ``tools/inference_agreement.py`` measures a trained model.
    """
    images = _images(1, args.size, device, args.seed)
    baseline = MaskCLIPDense(clip_model, vocab.text).to(device)
    runs: dict[str, Callable[[torch.dtype | None], torch.Tensor]] = {
        "baseline": lambda dtype: _run_autocast(baseline, images, dtype)
    }
    for name in args.models:
        pipe = StudentPipeline(name, clip_model, vocab).to(device)
        runs[name] = lambda dtype, p=pipe: p(images, precision=dtype)
    agreement = {}
    with torch.inference_mode():
        for name, run in runs.items():
            ref, low = run(None).argmax(1), run(torch.bfloat16).argmax(1)
            agreement[name] = float((ref == low).float().mean())
    return agreement


def _run_autocast(
    model: nn.Module, images: torch.Tensor, dtype: torch.dtype | None
) -> torch.Tensor:
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        return model(images)


def rescale_fractions(inference: dict[str, Any], factor: float) -> None:
    """Multiplies every ``fraction_of_gemm`` by ``factor`` (new GEMM reference)."""
    entries = [*inference["baseline"].values()]
    for per_batch in inference["models"].values():
        entries += per_batch.values()
    for b in inference.get("breakdown", {}).values():
        entries += [*b["stages"].values(), b["csh"], b["decoder"]]
    for entry in entries:
        entry["fraction_of_gemm"] *= factor
