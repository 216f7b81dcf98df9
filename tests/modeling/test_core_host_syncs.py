"""Host-device synchronisations of a training step, counted on the CPU (docs/GPU.md).

:class:`~chimeraseg.utils.host_syncs.SyncCounter` counts the operations that make a GPU's host
wait; the training step (forward + backward) is held to a budget of 10 of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chimeraseg.modeling import (
    ChimeraSegSettings,
    LossSettings,
    StudentSettings,
    build_chimeraseg_model,
)
from chimeraseg.utils.host_syncs import SyncCounter

SYNC_BUDGET = 10  # sync-forcing operations per training step (forward + backward)


def test_counter_counts_reads_and_data_dependent_shapes_only() -> None:
    x = torch.tensor([0.0, 2.0, 0.0, 3.0])
    with SyncCounter() as counter:
        bool(x.sum() > 1)  # a read of an op's output
        x[x > 0]  # boolean-mask index
        x.nonzero()
        torch.unique(x)
        x.repeat_interleave(torch.tensor([1, 2, 1, 1]))
        y = x.clone()
        y[x > 0] = 1.0  # boolean-mask index_put
    assert counter.syncs == 6, counter.counts
    assert counter.counts["index[bool]"] == 1 and counter.counts["index_put_[bool]"] == 1
    with SyncCounter() as counter:
        F.one_hot(torch.tensor([0, 2]), 3)  # range checks: CPU only, no sync on CUDA
        x * 2.5 + torch.tensor(1.0).item()  # a wrapped number / a tensor made by no op
        x.topk(2).indices.gather(0, torch.tensor([1]))
        x[torch.tensor([1, 3])]  # integer index: fixed shape
    assert counter.syncs == 0, counter.counts
    assert counter.total_ops > 0


def coco_stuff_model(clip: torch.nn.Module) -> torch.nn.Module:
    """The MiT-B0 model of the COCO-Stuff config (156 seen, 15 unseen), random text rows."""
    from chimeraseg.data.splits import get_split

    split = get_split("coco_stuff_171")
    dim = int(clip.visual.proj.shape[1])
    text = F.normalize(torch.randn(len(split.class_names), dim), dim=-1)
    settings = ChimeraSegSettings(
        student=StudentSettings(backbone="mit_b0"), losses=LossSettings(gather=False, seed=0)
    )
    return build_chimeraseg_model(
        settings,
        clip_model=clip,
        class_text=text,
        seen_ids=split.seen,
        unseen_ids=split.unseen,
    ).train()


def _batch(model: torch.nn.Module, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random images and dataset labels: 4x4 blocks of seen classes, the right third 255."""
    gen = torch.Generator().manual_seed(0)
    seen = torch.tensor(model.seen_ids)
    blocks = seen[torch.randint(0, len(seen), (2, 4, 4), generator=gen)]
    labels = blocks.repeat_interleave(size // 4, 1).repeat_interleave(size // 4, 2)
    labels[:, :, 2 * size // 3 :] = 255
    return torch.rand(2, 3, size, size, generator=gen) * 255, labels


def count_step(model: torch.nn.Module, size: int) -> SyncCounter:
    """Counts one forward + backward, with the valid mask the detectron2 meta-arch passes."""
    images, labels = _batch(model, size)
    valid = torch.ones(labels.shape, dtype=torch.bool)
    with SyncCounter() as counter:
        losses = model.forward_train(images, labels, 0, valid=valid)
        sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    return counter


def test_training_step_with_a_tiny_clip_stays_within_the_sync_budget(tiny_clip) -> None:
    counter = count_step(coco_stuff_model(tiny_clip), 256)
    assert counter.syncs <= SYNC_BUDGET, counter.counts
    # What is left: the label check, the classifier's width, the segmentation targets' check
    # and one read per grouping rule (pseudo_grouping.py); no data-dependent shape at all.
    assert set(counter.counts) <= {"item(where)", "item(any)", "item(max)"}, counter.counts
