"""Counts the operations that force a host-device synchronisation, on any device (CPU included).

On a GPU these operations make the host wait for the device: a scalar read (``.item()``,
``bool(t)``, ``int(t)``: ``_local_scalar_dense``, or ``item`` under ``inference_mode``), ops
whose output shape depends on the data (``nonzero``, ``unique*``, ``masked_select``,
boolean-mask ``index`` / ``index_put``, ``repeat_interleave`` with tensor repeats and no
``output_size``), ``bincount`` (its length is the data's maximum), ``is_nonzero`` and
``equal``. :class:`SyncCounter` is a
``TorchDispatchMode`` that counts them on the CPU, where they cost nothing, so a test can hold a
training step to a budget without a GPU.

Two kinds of scalar reads are not syncs on CUDA and are not counted: ``one_hot``'s range checks
(an ``aminmax`` and two reads, done on the CPU only) and reads of tensors no operation under the
mode produced (a Python number that torch wrapped in a CPU tensor, or a tensor made before the
mode started).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = ["SYNC_OPS", "SyncCounter"]

aten = torch.ops.aten

# Ops that always force a synchronisation (their overload packets).
SYNC_OPS = (
    aten.nonzero,
    aten._unique,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.unique_dim_consecutive,
    aten.masked_select,
    aten.bincount,
    aten.is_nonzero,
    aten.equal,
)
_BOOL_INDEX_OPS = (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_)
# Producers whose reads are no sync on CUDA: one_hot's CPU-only range check (aminmax) and Python
# numbers wrapped in a tensor (torch.tensor(x): lift_fresh, scalar_tensor).
_NOT_PRODUCED = ("aminmax", "lift_fresh", "scalar_tensor")
_REPEAT_INTERLEAVE_TENSOR = (aten.repeat_interleave.Tensor, aten.repeat_interleave.self_Tensor)


def _has_bool_index(indices: Any) -> bool:
    """Whether an ``index`` / ``index_put`` index list holds a bool or uint8 mask."""
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ()
    )


class SyncCounter(TorchDispatchMode):
    """Counts sync-forcing aten calls (and every aten call) while active.

    Attributes:
        counts: ``{op name: calls}`` of the sync-forcing calls.
        total_ops: number of aten calls seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.total_ops = 0
        self._producer: WeakTensorKeyDictionary = WeakTensorKeyDictionary()

    @property
    def syncs(self) -> int:
        """Number of sync-forcing calls counted so far."""
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        self.total_ops += 1
        name = self._sync_name(func, args, kwargs)
        if name is not None:
            self.counts[name] += 1
        out = func(*args, **kwargs)
        producer = func.overloadpacket.__name__
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._producer[tensor] = producer
        return out

    def _sync_name(self, func: Any, args: tuple, kwargs: dict) -> str | None:
        """The name to count ``func`` under, or None when it forces no synchronisation."""
        packet = func.overloadpacket
        if packet in (aten._local_scalar_dense, aten.item):  # item: under inference_mode
            producer = self._producer.get(args[0])
            if producer is None or producer in _NOT_PRODUCED:
                return None
            return f"item({producer})"
        if packet in SYNC_OPS:
            return packet.__name__
        if func in _REPEAT_INTERLEAVE_TENSOR and kwargs.get("output_size") is None:
            return "repeat_interleave"
        if packet in _BOOL_INDEX_OPS:
            indices = args[1] if len(args) > 1 else kwargs.get("indices")
            if _has_bool_index(indices):
                return f"{packet.__name__}[bool]"
        return None
