"""Two CPU processes (gloo): the summed per-γ confusion equals the single-process one."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from chimeraseg.evaluation.gamma_sweep import GammaSweepAccumulator
from chimeraseg.utils.distributed import all_reduce_sum

N, UNSEEN, GAMMAS, WORLD = 5, [1, 3], [0.0, 0.5, 1.0], 2


def _images() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Five images of different sizes (so the two shards differ), same on every process."""
    gen = torch.Generator().manual_seed(0)
    images = []
    for i in range(5):
        h, w = 6 + i, 9 - i
        gt = torch.randint(0, N, (h, w), generator=gen)
        gt[0, 0] = 255
        images.append((torch.randn(N, h, w, generator=gen), gt))
    return images


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        acc = GammaSweepAccumulator(N, UNSEEN, GAMMAS, ignore=255)
        for logits, gt in _images()[rank::WORLD]:  # rank 0: images 0, 2, 4; rank 1: 1, 3
            acc.update(logits, gt)
        conf = all_reduce_sum(acc.conf.clone())
        torch.save(conf, os.path.join(out_dir, f"conf_{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_confusion_summed_over_two_gloo_processes_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    single = GammaSweepAccumulator(N, UNSEEN, GAMMAS, ignore=255)
    for logits, gt in _images():
        single.update(logits, gt)
    for rank in range(WORLD):
        summed = torch.load(tmp_path / f"conf_{rank}.pt")
        assert torch.equal(summed, single.conf)
    shard = GammaSweepAccumulator(N, UNSEEN, GAMMAS, ignore=255)
    for logits, gt in _images()[0::WORLD]:
        shard.update(logits, gt)
    assert not torch.equal(shard.conf, single.conf)  # the reduction did add something
