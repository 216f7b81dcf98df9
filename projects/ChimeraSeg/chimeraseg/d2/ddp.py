"""DistributedDataParallel helpers that also work for CPU models (gloo)."""

from __future__ import annotations

from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.utils import comm
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def wrap_ddp(model: nn.Module, cfg: CfgNode) -> nn.Module:
    """Wraps the model in DistributedDataParallel when more than one process runs.

    Unlike detectron2's ``create_ddp_model`` this also works for CPU models (gloo): ``device_ids``
    is only passed for CUDA.
    """
    if comm.get_world_size() == 1:
        return model
    kwargs: dict[str, Any] = {"broadcast_buffers": False}
    if cfg.MODEL.DEVICE.startswith("cuda"):
        kwargs["device_ids"] = [comm.get_local_rank()]
    return nn.parallel.DistributedDataParallel(model, **kwargs)


def broadcast_persistent_buffers(model: nn.Module) -> None:
    """Copies rank 0's persistent buffers (BatchNorm running statistics) to every process.

    :func:`wrap_ddp` does not broadcast buffers. SyncBatchNorm (also on the CPU) keeps the running
    statistics equal on every process, but a model built without it (a single-process checkpoint
    evaluated by several, or a custom ``build_model``) trains its own per process, while the
    checkpoint holds rank 0's. Broadcasting them before evaluation makes every process evaluate the
    checkpointed model. Collective: every process must call it (a no-op in a single process).
    """
    if comm.get_world_size() == 1:
        return
    persistent = set(model.state_dict())
    for name, buffer in model.named_buffers():
        if name in persistent:
            torch.distributed.broadcast(buffer, src=0)
