"""SyncBatchNorm that also synchronises CPU tensors (gloo), so CPU DDP trains like GPU DDP.

``torch.nn.SyncBatchNorm`` refuses CPU inputs in a process group, and DistributedDataParallel
refuses it in CPU modules. :func:`convert_sync_batchnorm` therefore gives CUDA models torch's
SyncBatchNorm and CPU models :class:`CPUSyncBatchNorm`, a BatchNorm that, in training within a group
of several processes, takes the batch statistics over all of them with differentiable all-reduces:
the global mean, then the global biased variance of the centred inputs (two passes, no
``E[x²] - E[x]²`` cancellation). Every process then normalises with, and updates its running
statistics from, the same numbers.
"""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_nn
from torch import nn

from chimeraseg.utils.distributed import is_distributed

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm"]


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm of any ``(B, C, *)`` input, synchronised over the process group when training.

    Same constructor and state as ``nn.BatchNorm2d``; not a ``nn.SyncBatchNorm`` subclass, which
    DistributedDataParallel rejects for CPU modules.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2 or input.shape[1] == 0:
            raise ValueError(
                f"CPUSyncBatchNorm: expected (B, C, *) input, got {tuple(input.shape)}"
            )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalises ``(B, C, ...)`` with statistics over every process's batch.

        Args:
            input: ``(B, C, *)`` features.

        Returns:
            ``(B, C, *)`` normalised features.
        """
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)  # broadcast (C,) over (B, C, *)
        count = input.new_tensor([input.numel() // channels])
        sums = dist_nn.all_reduce(torch.cat([input.sum(dims), count]))  # (C + 1,)
        total = sums[-1]
        mean = sums[:channels] / total  # (C,)
        centred = input - mean.view(shape)
        var = dist_nn.all_reduce((centred * centred).sum(dims)) / total  # (C,) biased
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(total))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, total: float) -> None:
        """Momentum update of the running mean and unbiased variance, as ``nn.BatchNorm`` does."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum
        if factor is None:  # cumulative moving average
            factor = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (total / max(total - 1.0, 1.0))
        self.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased, alpha=factor)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replaces every ``BatchNorm*D`` of ``module`` by a synchronised one (same state).

    Args:
        module: the model.
        device_type: ``"cuda"`` (and other accelerators): torch's ``nn.SyncBatchNorm``;
            ``"cpu"``: :class:`CPUSyncBatchNorm` (torch's converted layers get this class, which
            has the same state).
    """
    module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if device_type == "cpu":
        for layer in module.modules():
            if type(layer) is nn.SyncBatchNorm:
                layer.__class__ = CPUSyncBatchNorm
    return module
