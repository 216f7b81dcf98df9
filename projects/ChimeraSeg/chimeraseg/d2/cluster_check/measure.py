"""Speed and memory of a paper config on this machine's devices (random weights, synthetic input).

Every launched process trains the config's model under DDP on random crops of the config's size
at its per-GPU batch (``IMS_PER_BATCH / REFERENCE_WORLD_SIZE``, as detectron2's rescaling keeps
it), then times single-image inference at ``infer_size``² in float32, bfloat16 and float16. The
weights are random (CLIP and student, explicitly allowed): only speed and memory are measured.
Data loading and evaluation are not timed.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from typing import Any

import torch
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from chimeraseg.d2.config import get_chimeraseg_cfg
from chimeraseg.d2.ddp import unwrap_model, wrap_ddp
from chimeraseg.d2.memory_estimate import OFFLINE_OPTS, fake_batch, images_per_gpu
from chimeraseg.d2.trainer import ChimeraSegTrainer, build_optimizer
from chimeraseg.utils.distributed import all_gather_rows

__all__ = ["INFERENCE_PRECISIONS", "measure", "precision_skip_reason"]

INFERENCE_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_skip_reason(device: str, precision: str) -> str:
    """Why ``precision`` cannot run on ``device`` ("" when it can)."""
    if precision == "fp16" and device == "cpu":
        return "float16 autocast needs CUDA (the CPU supports bfloat16 only)"
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU does not support bfloat16"
    return ""


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _train_times(model: Any, optimizer: Any, batch: list[dict], device: str, warmup: int, n: int):
    """Seconds of each of ``n`` training steps after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + n):
        _sync(device)
        start = time.perf_counter()
        with EventStorage(i):
            losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def _peak_memory(device: str) -> dict[str, Any]:
    """Peak allocated / reserved CUDA bytes of this process, or its peak RSS on the CPU."""
    if device == "cuda":
        return {
            "kind": "torch.cuda.max_memory_allocated",
            "allocated": torch.cuda.max_memory_allocated(),
            "reserved": torch.cuda.max_memory_reserved(),
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"kind": "process peak RSS (CPU)", "allocated": rss, "reserved": rss}


def _inference(model: Any, size: int, device: str, warmup: int, n: int) -> dict[str, Any]:
    """Images/s of single-image inference at ``size``² per precision (or the skip reason)."""
    inner = unwrap_model(model).eval()
    base = inner.model.inference
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    batch = [{"image": image, "height": size, "width": size}]
    out: dict[str, Any] = {}
    for name, dtype in INFERENCE_PRECISIONS.items():
        reason = precision_skip_reason(device, name)
        if reason:
            out[name] = {"skipped": reason}
            continue
        inner.model.inference = dataclasses.replace(base, precision=dtype)
        with torch.no_grad():
            for i in range(warmup + n):
                if i == warmup:
                    _sync(device)
                    start = time.perf_counter()
                inner(batch)
            _sync(device)
        out[name] = {"images_per_s": n / (time.perf_counter() - start)}
    inner.model.inference = base
    return out


def measure(
    config_file: str,
    opts: list[str],
    device: str,
    iterations: int,
    warmup: int,
    infer_size: int,
    infer_iterations: int,
) -> dict[str, Any]:
    """Times training and inference of ``config_file`` on this process (collective: DDP).

    Args:
        config_file: the paper config.
        opts: further overrides (after the random-weights ones).
        device: ``"cuda"`` or ``"cpu"``.
        iterations: timed training steps (after ``warmup``).
        warmup: untimed steps first.
        infer_size: side of the square inference image.
        infer_iterations: timed inference calls per precision.

    Returns:
        This rank's figures; rank 0's also hold every rank's seconds per step.
    """
    cfg = get_chimeraseg_cfg(config_file, [*OFFLINE_OPTS, *opts, "MODEL.DEVICE", device])
    per_gpu, crop = images_per_gpu(cfg), tuple(cfg.INPUT.CROP.SIZE)
    torch.manual_seed(0)
    model = ChimeraSegTrainer.build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    model = wrap_ddp(model, cfg)
    batch = fake_batch(per_gpu, crop, list(unwrap_model(model).model.seen_ids))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = _train_times(model, optimizer, batch, device, warmup, iterations)
    memory = _peak_memory(device)
    s_per_iter = statistics.median(times)
    gathered, _ = all_gather_rows(torch.tensor([s_per_iter], dtype=torch.float64, device=device))
    scaled = ChimeraSegTrainer.auto_scale_workers(cfg, comm.get_world_size())
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    return {
        "config": config_file,
        "rank": comm.get_rank(),
        "images_per_gpu": per_gpu,
        "crop": list(crop),
        "weights": "random CLIP and student (speed and memory only)",
        "s_per_iter": s_per_iter,
        "s_per_iter_all_ranks": gathered.tolist(),
        "images_per_s_per_gpu": per_gpu / s_per_iter,
        "peak_memory": memory,
        "schedule": {
            "max_iter_config": cfg.SOLVER.MAX_ITER,
            "reference_world_size": cfg.SOLVER.REFERENCE_WORLD_SIZE,
            "max_iter_here": scaled.SOLVER.MAX_ITER,
            "global_batch_here": scaled.SOLVER.IMS_PER_BATCH,
        },
        "inference": _inference(model, infer_size, device, 1, infer_iterations),
    }
