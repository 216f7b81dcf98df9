"""Cross-process probes of the cluster check: SGD against its global-batch value, rank agreement.

Every function here is collective (all processes call it in the same order) and returns its
verdict on rank 0; the other ranks get the same dictionary without the comparison fields.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn

from chimeraseg.modeling.losses.selective_global_distillation import SelectiveGlobalDistillation
from chimeraseg.utils.distributed import all_gather_rows
from chimeraseg.utils.precision import float32_island
from chimeraseg.utils.sync_batchnorm import CPUSyncBatchNorm

__all__ = [
    "FAULTS",
    "SGDProbe",
    "batchnorm_layers",
    "compare_across_ranks",
    "global_batch_sgd_losses",
]

# Planted faults (tests of the checker itself): rank 1's SGD joins the gather but contrasts only
# its own CLS tokens; or the model keeps per-process BatchNorm instead of SyncBatchNorm.
FAULTS = ("skip-gather", "no-syncbn")


def global_batch_sgd_losses(
    pooled: torch.Tensor, cls: torch.Tensor, counts: list[int], tau: float
) -> list[float]:
    """SGD's InfoNCE of the whole batch on one process, averaged per rank's rows.

    Args:
        pooled: ``(N, D)`` pooled features ``Fg`` of the global batch, rank 0's rows first.
        cls: ``(N, D)`` CLS embeddings of the same images.
        counts: rows per rank (sum ``N``).
        tau: SGD's temperature.

    Returns:
        One loss per rank: the mean over its rows of ``-log softmax_j(F̂g·Ĉjᵀ/τ)[own]``.
    """
    with float32_island(cls.device):  # as SGD's InfoNCE: float32 under any autocast
        logits = F.normalize(pooled.float(), dim=-1) @ F.normalize(cls.float(), dim=-1).t()
        targets = torch.arange(cls.shape[0], device=cls.device)
        per_row = F.cross_entropy(logits / tau, targets, reduction="none")  # (N,)
    return [float(part.mean()) for part in per_row.split(counts)]


class SGDProbe:
    """Records the inputs and output of each SGD call and compares it with the global batch.

    Installed on the criterion's :class:`SelectiveGlobalDistillation` of one process: the pooled
    features (an instance-level wrapper of ``pooled_features``), the CLS rows and the loss of the
    latest call are kept. With ``skip_gather`` (planted fault) the module joins the gather, so the
    collectives stay matched, and then contrasts its local CLS tokens only.

    Args:
        module: the SGD module of this process.
        skip_gather: plant the fault on this process.
    """

    def __init__(self, module: SelectiveGlobalDistillation, skip_gather: bool) -> None:
        self.module = module
        self.latest: dict[str, Any] = {}
        original = module.pooled_features

        def recording_pooled_features(*args: Any, **kwargs: Any) -> torch.Tensor:
            pooled = original(*args, **kwargs)
            self.latest["pooled"] = pooled.detach()
            return pooled

        module.pooled_features = recording_pooled_features  # shadows the method on this object
        module.register_forward_hook(self._record, with_kwargs=True)
        if skip_gather:
            module.register_forward_pre_hook(_skip_gather, with_kwargs=True)

    def _record(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        cls = args[1] if len(args) > 1 else kwargs["cls"]
        self.latest.update(cls=cls.detach(), loss=float(output.detach()))

    def compare(self, autocast: Any = None) -> dict[str, Any]:
        """Collective: the latest call's loss on every rank vs the one-process global value.

        Args:
            autocast: the autocast context the training step ran under (None = float32); the
                reference runs inside it, and is float32 there as SGD's InfoNCE is.

        Returns:
            On rank 0 ``{"rank_losses", "global_losses", "max_abs_diff", "rows_per_rank"}``;
            ``{}`` on the other ranks.
        """
        pooled, _ = all_gather_rows(self.latest["pooled"])
        cls, _ = all_gather_rows(self.latest["cls"])
        loss = torch.tensor([self.latest["loss"]], dtype=torch.float64, device=cls.device)
        losses, _ = all_gather_rows(loss)
        counts, _ = all_gather_rows(torch.tensor([self.latest["cls"].shape[0]], device=cls.device))
        if not comm.is_main_process():
            return {}
        with autocast or nullcontext():
            expected = global_batch_sgd_losses(pooled, cls, counts.tolist(), self.module.tau)
        actual = losses.tolist()
        return {
            "rank_losses": actual,
            "global_losses": expected,
            "max_abs_diff": max(abs(a - e) for a, e in zip(actual, expected)),
            "rows_per_rank": counts.tolist(),
        }


def _skip_gather(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook of the planted fault: gather (matched collectives), then use local rows."""
    cls = args[1] if len(args) > 1 else kwargs["cls"]
    all_gather_rows(cls)
    return args, {**kwargs, "gather": False}


def batchnorm_layers(model: nn.Module) -> dict[str, int]:
    """Counts the BatchNorm layers of ``model``: ``{"sync": n, "per_process": m}``."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    sync = sum(isinstance(m, (nn.SyncBatchNorm, CPUSyncBatchNorm)) for m in layers)
    return {"sync": sync, "per_process": len(layers) - sync}


def compare_across_ranks(model: nn.Module) -> dict[str, Any]:
    """Collective: every parameter and buffer of ``model`` compared with rank 0's copy.

    All tensors are flattened into one float64 vector (exact for float32 values and integer
    counters), rank 0's vector is broadcast, and the per-tensor largest absolute difference is
    reduced with MAX over the processes.

    Returns:
        On rank 0 ``{"parameters": {...}, "buffers": {...}}``, each with ``count``,
        ``max_abs_diff`` and ``mismatched`` (names whose copies differ on some rank, at most 20);
        ``{}`` on the other ranks.
    """
    groups = {"parameters": dict(model.named_parameters()), "buffers": dict(model.named_buffers())}
    names = [(g, n) for g, tensors in groups.items() for n in tensors]
    tensors = [groups[g][n].detach().reshape(-1).to(torch.float64) for g, n in names]
    flat = torch.cat(tensors)  # (P,)
    reference = flat.clone()
    if comm.get_world_size() > 1:
        dist.broadcast(reference, src=0)
    diffs = torch.stack(
        [d.abs().max() if d.numel() else d.new_zeros(()) for d in (flat - reference).split(
            [t.numel() for t in tensors]
        )]
    )  # (T,) per tensor  # fmt: skip
    if comm.get_world_size() > 1:
        dist.all_reduce(diffs, op=dist.ReduceOp.MAX)
    if not comm.is_main_process():
        return {}
    out: dict[str, Any] = {}
    for group in groups:
        rows = [(n, float(d)) for (g, n), d in zip(names, diffs) if g == group]
        out[group] = {
            "count": len(rows),
            "max_abs_diff": max((d for _, d in rows), default=0.0),
            "mismatched": [n for n, d in rows if d != 0.0][:20],
        }
    return out
