"""CPUSyncBatchNorm over two gloo processes equals one BatchNorm over the concatenated batch.

Rank 0 holds images 0..1 and rank 1 images 2..4, so the counts differ. Outputs, input and weight
gradients (summed over ranks, as DDP's averaging of the mean losses implies) and the running
statistics after two steps are compared with ``nn.BatchNorm2d`` on all five images.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from chimeraseg.utils.sync_batchnorm import CPUSyncBatchNorm, convert_sync_batchnorm

WORLD, C = 2, 3
ROWS = {0: [0, 1], 1: [2, 3, 4]}


def _free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _inputs(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(5, C, 4, 4)`` inputs and upstream gradients of one step (same on every process)."""
    gen = torch.Generator().manual_seed(10 + step)
    x = torch.randn(5, C, 4, 4, generator=gen) * 3 + 1
    return x, torch.randn(5, C, 4, 4, generator=gen)


def _layer() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.BatchNorm2d(C)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        layer = convert_sync_batchnorm(_layer(), "cpu")
        assert type(layer) is CPUSyncBatchNorm
        out = {}
        for step in range(2):
            x, grad = _inputs(step)
            x = x[ROWS[rank]].clone().requires_grad_(True)
            y = layer(x)
            y.backward(grad[ROWS[rank]])
            out[f"y{step}"], out[f"gx{step}"] = y.detach(), x.grad
        out["gw"], out["gb"] = layer.weight.grad, layer.bias.grad
        out["state"] = {k: v.clone() for k, v in layer.state_dict().items()}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_cpu_sync_batchnorm_equals_full_batch_batchnorm(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    reference = _layer()
    for step in range(2):
        x, grad = _inputs(step)
        x.requires_grad_(True)
        y = reference(x)
        y.backward(grad)
        for r, res in enumerate(ranks):
            torch.testing.assert_close(res[f"y{step}"], y.detach()[ROWS[r]], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(res[f"gx{step}"], x.grad[ROWS[r]], rtol=1e-4, atol=1e-5)
    # Each rank's parameter gradient is its share; their sum is the full batch's gradient.
    torch.testing.assert_close(ranks[0]["gw"] + ranks[1]["gw"], reference.weight.grad)
    torch.testing.assert_close(ranks[0]["gb"] + ranks[1]["gb"], reference.bias.grad)
    # Running statistics: identical on both ranks and equal to the full-batch BatchNorm's.
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], ranks[1]["state"][key], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-5, atol=1e-6)


def test_cpu_sync_batchnorm_without_a_process_group_is_batchnorm() -> None:
    x = torch.randn(4, C, 5, 5)
    plain, synced = _layer(), convert_sync_batchnorm(_layer(), "cpu")
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced.running_var, plain.running_var)
    synced.eval(), plain.eval()
    torch.testing.assert_close(synced(x), plain(x))
