"""The software and devices the cluster check runs on (torch, CUDA, NCCL, detectron2, GPUs)."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["environment_report"]


def _detectron2() -> dict[str, Any]:
    """detectron2's version, path and whether its C++ extension was built with CUDA."""
    import detectron2

    out: dict[str, Any] = {"version": detectron2.__version__, "path": detectron2.__file__}
    try:
        from detectron2 import _C
    except ImportError as e:
        return {**out, "extension": f"not importable: {e}", "built_with_cuda": False}
    cuda = _C.get_cuda_version()
    has_cuda = getattr(_C, "has_cuda", lambda: cuda != "not available")()
    return {**out, "extension_cuda": cuda, "built_with_cuda": bool(has_cuda)}


def _gpus() -> list[dict[str, Any]]:
    """Name, memory, compute capability and bfloat16 support of every visible GPU."""
    if not torch.cuda.is_available():
        return []
    out = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        out.append(
            {
                "index": index,
                "name": props.name,
                "memory_bytes": props.total_memory,
                "capability": f"{props.major}.{props.minor}",
                "bf16": bool(torch.cuda.is_bf16_supported()),
                "fp16": True,  # autocast float16 runs on every CUDA GPU torch supports
            }
        )
    return out


def _nccl_version() -> str | None:
    """NCCL's version as ``"2.21.5"``, or None without CUDA."""
    if not (torch.cuda.is_available() and dist.is_nccl_available()):
        return None
    version = torch.cuda.nccl.version()
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def environment_report(device: str, processes: int) -> dict[str, Any]:
    """What the report's ``environment`` section holds.

    Args:
        device: ``"cuda"`` or ``"cpu"``: where the check runs.
        processes: how many processes detectron2's launch starts.
    """
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cuda_available": torch.cuda.is_available(),
        "nccl": _nccl_version(),
        "gloo": dist.is_gloo_available(),
        "detectron2": _detectron2(),
        "gpus": _gpus(),
        "cpu_bf16": True,  # CPU autocast supports bfloat16
        "device": device,
        "backend": "nccl" if device == "cuda" else "gloo",
        "launch_processes": processes,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
