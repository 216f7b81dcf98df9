"""Section 3: one training step (batch 2, 512 crop) split into its stages, with peak memory.

The step is the core's own ``ChimeraSegModel.forward_train`` + ``backward`` + AdamW step
(docs/METHOD.md, 'Paper settings'). Its stages are timed from outside, without changing the
model, by wrapping the pieces ``forward_train`` calls (CUDA-synchronised wall clock):

- ``student_forward``: ``model.clip_features`` (backbone + decoder + CSH);
- ``teacher_forward``: forward pre-/post-hooks on ``model.teacher``;
- ``pseudo_masks``: ``generate_pseudo_masks`` as looked up by ``chimeraseg_model``;
- ``segmentation_loss`` / ``sam_loss``: the model's ``_segmentation_loss`` / ``_sam_loss``;
- ``sgd_loss``: hooks on ``model.sgd`` (selective global distillation);
- ``other_forward``: the rest of ``forward_train`` (label mapping, prototypes);
- ``backward`` and ``optimizer_step``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch import nn

import chimeraseg.modeling.chimeraseg_model as core
from benchmarks.clip_setup import Vocabulary
from benchmarks.measure import PeakMemory, synchronize
from benchmarks.pseudo import synthetic_labels
from benchmarks.student import build_model

STAGES = (
    "teacher_forward",
    "pseudo_masks",
    "student_forward",
    "segmentation_loss",
    "sgd_loss",
    "sam_loss",
    "other_forward",
    "backward",
    "optimizer_step",
)


class StageTimer:
    """Synchronised wall time per stage name, summed within a step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step: dict[str, float] = defaultdict(float)
        self.history: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.step[name] += time.perf_counter() - start

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its calls timed under ``name``."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self(name):
                return fn(*args, **kwargs)

        return timed

    def end_step(self) -> None:
        for name in STAGES:
            self.history[name].append(self.step.get(name, 0.0))
        self.step = defaultdict(float)


def _hook_module(module: nn.Module, name: str, timer: StageTimer) -> list[Any]:
    """Times every call of ``module`` under ``name`` with forward pre-/post-hooks."""
    state: dict[str, float] = {}

    def pre(*_: Any) -> None:
        synchronize(timer.device)
        state["start"] = time.perf_counter()

    def post(*_: Any) -> None:
        synchronize(timer.device)
        timer.step[name] += time.perf_counter() - state["start"]

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


@contextlib.contextmanager
def instrument(model: core.ChimeraSegModel, timer: StageTimer) -> Iterator[None]:
    """Installs the timers of the module docstring; removes them on exit."""
    handles = _hook_module(model.teacher, "teacher_forward", timer)
    handles += _hook_module(model.sgd, "sgd_loss", timer)
    original = core.generate_pseudo_masks
    core.generate_pseudo_masks = timer.wrap("pseudo_masks", original)
    for attr, name in (
        ("clip_features", "student_forward"),
        ("_segmentation_loss", "segmentation_loss"),
        ("_sam_loss", "sam_loss"),
    ):
        setattr(model, attr, timer.wrap(name, getattr(model, attr)))  # instance attribute
    try:
        yield
    finally:
        core.generate_pseudo_masks = original
        for attr in ("clip_features", "_segmentation_loss", "_sam_loss"):
            delattr(model, attr)
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
    parts_sum = sum(timer.step[n] for n in STAGES[:6])
    timer.step["other_forward"] = timer.step.pop("forward_total") - parts_sum
    timer.end_step()


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
    }
