"""Section 3: one training step (batch 2, 512 crop) split into its stages, with peak memory.

The step is the core's own ``ChimeraSegModel.forward_train`` + ``backward`` + AdamW step
(docs/METHOD.md, 'Paper settings'). Its stages are timed from outside, without changing the
model: forward pre-/post-hooks on its modules stamp the (CUDA-synchronised) wall clock, and each
stage is the time between two stamps of the same step, in the order ``forward_train`` runs them:

- ``student_forward``: ``model.backbone`` called .. ``model.head`` returned (backbone, decoder,
  CSH);
- ``teacher_forward``: ``model.teacher`` called .. returned;
- ``pseudo_masks``: ``model.teacher`` returned .. ``model.criterion`` called (pseudo masks and
  prototypes);
- ``segmentation_loss``: ``model.criterion`` called .. its ``losses["loss_sgd"]`` called;
- ``distillation_loss``: ``losses["loss_sgd"]`` called .. returned (Selective Global
  Distillation);
- ``alignment_loss``: ``losses["loss_sgd"]`` returned .. ``model.criterion`` returned (SAM);
- ``other_forward``: the rest of ``forward_train`` (label mapping);
- ``backward`` and ``optimizer_step``.

One more, untimed step (forward + backward) is counted by :class:`~benchmarks.syncs.SyncCounter`:
its aten calls and its host-device synchronisations (docs/GPU.md, 'Host synchronisations per
training step').
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from benchmarks.clip_setup import Vocabulary
from benchmarks.measure import PeakMemory, synchronize
from benchmarks.pseudo import synthetic_labels
from benchmarks.student import build_model
from benchmarks.syncs import SyncCounter
from chimeraseg.modeling import ChimeraSegModel

STAGES = (
    "teacher_forward",
    "pseudo_masks",
    "student_forward",
    "segmentation_loss",
    "distillation_loss",
    "alignment_loss",
    "other_forward",
    "backward",
    "optimizer_step",
)
# (stage, stamp at its start, stamp at its end); a stamp is "<module>:pre" or "<module>:post".
_FORWARD_STAGES = (
    ("student_forward", "backbone:pre", "head:post"),
    ("teacher_forward", "teacher:pre", "teacher:post"),
    ("pseudo_masks", "teacher:post", "criterion:pre"),
    ("segmentation_loss", "criterion:pre", "distillation:pre"),
    ("distillation_loss", "distillation:pre", "distillation:post"),
    ("alignment_loss", "distillation:post", "criterion:post"),
)


class StageTimer:
    """Synchronised wall time per stage name, summed within a step, and hook time stamps."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step: dict[str, float] = defaultdict(float)
        self.stamps: dict[str, float] = {}
        self.history: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.step[name] += time.perf_counter() - start

    def stamp(self, name: str) -> None:
        synchronize(self.device)
        self.stamps[name] = time.perf_counter()

    def end_step(self) -> None:
        for stage, begin, end in _FORWARD_STAGES:
            self.step[stage] = self.stamps[end] - self.stamps[begin]
        for name in STAGES:
            self.history[name].append(self.step.get(name, 0.0))
        self.step, self.stamps = defaultdict(float), {}


@contextlib.contextmanager
def instrument(model: ChimeraSegModel, timer: StageTimer) -> Iterator[None]:
    """Installs the time-stamp hooks of the module docstring; removes them on exit."""
    modules = {
        "backbone": model.backbone,
        "head": model.head,
        "teacher": model.teacher,
        "criterion": model.criterion,
        "distillation": model.criterion.losses["loss_sgd"],
    }
    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda *_, n=name: timer.stamp(f"{n}:pre")))
        handles.append(module.register_forward_hook(lambda *_, n=name: timer.stamp(f"{n}:post")))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _step(parts: dict[str, Any], timer: StageTimer, iteration: int) -> None:
    model, optimizer = parts["model"], parts["optimizer"]
    with timer("forward_total"):
        losses = model.forward_train(parts["images"], parts["labels"], iteration)
    with timer("backward"):
        sum(losses.values()).backward()
    with timer("optimizer_step"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    stamps = timer.stamps
    parts_sum = stamps["criterion:post"] - stamps["backbone:pre"]
    timer.step["other_forward"] = timer.step.pop("forward_total") - parts_sum
    timer.end_step()


def count_step(parts: dict[str, Any], iteration: int) -> dict[str, Any]:
    """Aten calls and sync-forcing calls of one forward + backward (gradients then dropped)."""
    model = parts["model"]
    with SyncCounter() as counter:
        losses = model.forward_train(parts["images"], parts["labels"], iteration)
        sum(losses.values()).backward()
    parts["optimizer"].zero_grad(set_to_none=True)
    return {
        "aten_calls": counter.total_ops,
        "syncs": counter.syncs,
        "sync_ops": dict(counter.counts),
    }


def run_training(
    args: argparse.Namespace, clip_model: nn.Module, vocab: Vocabulary, device: torch.device
) -> dict[str, Any]:
    """Median time per stage of a training step, the step total and its peak memory."""
    gen = torch.Generator().manual_seed(args.seed)
    batch, size, name = args.train_batch, args.size, args.train_model
    model = build_model(name, clip_model, vocab, with_teacher=True).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    train_ids = synthetic_labels(batch, size, len(vocab.seen), args.seed)
    seen = torch.tensor(vocab.seen + (255,))  # training id -> dataset id (255 stays 255)
    labels = seen[train_ids.clamp(max=len(vocab.seen))]
    parts = {
        "model": model,
        "images": (torch.rand(batch, 3, size, size, generator=gen) * 255).to(device),
        "labels": labels.to(device),
        "optimizer": torch.optim.AdamW(params, lr=6e-5, weight_decay=0.01),
    }
    timer = StageTimer(device)
    with instrument(model, timer):
        for i in range(args.warmup):
            _step(parts, timer, i)
        timer.history.clear()
        with PeakMemory(device) as mem:
            for i in range(args.repeats):
                _step(parts, timer, args.warmup + i)
    counted = count_step(parts, args.warmup + args.repeats)
    stages = {n: statistics.median(timer.history[n]) for n in STAGES}
    total = sum(stages.values())
    return {
        "model": name,
        "batch": batch,
        "size": size,
        "stages_s": stages,
        "shares": {n: t / total for n, t in stages.items()},
        "step_s": total,
        "peak_mem_mb": mem.peak_mb,
        "mem_method": mem.method,
        "trainable_params_m": sum(p.numel() for p in params) / 1e6,
        "counted_step": counted,
    }
