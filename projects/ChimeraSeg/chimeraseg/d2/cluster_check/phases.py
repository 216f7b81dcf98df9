"""What each launched process of the cluster check runs: short trainings, --eval-only, timing.

:func:`check_worker` is the function detectron2's ``launch`` starts on every process. It runs the
phases of the :class:`CheckPlan` in order and writes ``rank<r>_<phase>.json`` into the run
directory after each, so the parent process knows how far a crashed run got.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from detectron2.engine import HookBase, hooks
from detectron2.modeling import build_model
from detectron2.utils import comm

from chimeraseg.d2.cluster_check.amp_masks import AMP_PHASE, amp_phase
from chimeraseg.d2.cluster_check.probes import SGDProbe, batchnorm_layers, compare_across_ranks
from chimeraseg.d2.config import get_chimeraseg_cfg
from chimeraseg.d2.ddp import unwrap_model
from chimeraseg.d2.trainer import ChimeraSegTrainer, load_trained_weights
from chimeraseg.modeling.losses.selective_global_distillation import SelectiveGlobalDistillation

__all__ = ["TRAIN_PHASES", "CheckPlan", "check_worker", "phase_file"]

# Training phases -> SOLVER.AMP.PRECISION ("" = float32, AMP off).
TRAIN_PHASES = {"train_fp32": "", "train_bf16": "bfloat16", "train_fp16": "float16"}


@dataclass(frozen=True)
class CheckPlan:
    """Everything a launched process needs (picklable; built by the parent).

    Attributes:
        run_dir: where each rank writes its phase files and the trainings their outputs.
        config_file: the config of the correctness phases (the synthetic world).
        opts: its ``KEY VALUE`` overrides (CLIP weights, device, sizes).
        datasets_root: root holding ``synthetic_zs/``.
        phases: phase names in order (:data:`TRAIN_PHASES`, ``eval_only``,
            ``amp_pseudo_masks``, ``measure``).
        iterations: iterations of ``train_fp32``.
        amp_iterations: iterations of the AMP phases (batches of ``amp_pseudo_masks``).
        images_per_process: images per process and step (global batch = this x processes).
        faults: planted faults of :data:`~chimeraseg.d2.cluster_check.probes.FAULTS` (tests of
            the checker; empty for a real check).
        measure: keyword arguments of :func:`~chimeraseg.d2.cluster_check.measure.measure`.
    """

    run_dir: str
    config_file: str
    opts: tuple[str, ...]
    datasets_root: str
    phases: tuple[str, ...]
    iterations: int
    amp_iterations: int
    images_per_process: int
    faults: tuple[str, ...]
    measure: dict[str, Any]


def phase_file(run_dir: str, rank: int, phase: str) -> str:
    """Path of one rank's result of one phase."""
    return os.path.join(run_dir, f"rank{rank}_{phase}.json")


def check_worker(plan: CheckPlan) -> None:
    """Runs every phase of ``plan`` on this process (the function ``launch`` starts)."""
    from chimeraseg.d2.cluster_check.measure import measure
    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs

    register_all_synthetic_zs(plan.datasets_root, replace=True)
    for phase in plan.phases:
        if phase in TRAIN_PHASES:
            result = train_phase(plan, phase)
        elif phase == "eval_only":
            result = eval_phase(plan)
        elif phase == AMP_PHASE:
            result = amp_phase(plan)
        else:
            result = measure(**plan.measure)
        with open(phase_file(plan.run_dir, comm.get_rank(), phase), "w") as f:
            json.dump(result, f, indent=1)
        comm.synchronize()


def _phase_cfg(plan: CheckPlan, phase: str, extra: list[str]) -> Any:
    """The correctness config of ``phase``: global batch, iterations, precision, output dir."""
    world = comm.get_world_size()
    precision = TRAIN_PHASES.get(phase, "")
    iterations = plan.iterations if precision == "" else plan.amp_iterations
    opts = [
        *plan.opts,
        "OUTPUT_DIR", os.path.join(plan.run_dir, phase),
        "SOLVER.IMS_PER_BATCH", str(plan.images_per_process * world),
        "SOLVER.REFERENCE_WORLD_SIZE", "0",
        "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", str(10 * iterations),
        "TEST.EVAL_PERIOD", "0",
        "SOLVER.AMP.ENABLED", str(bool(precision)),
        *(["SOLVER.AMP.PRECISION", precision] if precision else []),
        "SEED", "0",
        *extra,
    ]  # fmt: skip
    cfg = get_chimeraseg_cfg(plan.config_file, opts)
    cfg.freeze()
    return cfg


def train_phase(plan: CheckPlan, phase: str) -> dict[str, Any]:
    """A short training under DDP with the probes; returns this rank's record of it."""
    cfg = _phase_cfg(plan, phase, [])
    trainer = _CheckTrainer(cfg, faults=plan.faults)
    trainer.resume_or_load(resume=False)
    trainer.train()
    inner = unwrap_model(trainer.model)
    state = compare_across_ranks(inner)
    return {
        "phase": phase,
        "rank": comm.get_rank(),
        "world_size": comm.get_world_size(),
        "images_per_process": plan.images_per_process,
        "iterations": len(trainer.probe_hook.losses),
        "losses": trainer.probe_hook.losses,
        "finite": all(
            math.isfinite(v) for step in trainer.probe_hook.losses for v in step.values()
        ),
        "sgd": trainer.probe_hook.sgd,
        "state": state,
        "batchnorm": batchnorm_layers(inner),
        "checkpoint": os.path.join(cfg.OUTPUT_DIR, "model_final.pth"),
    }


def eval_phase(plan: CheckPlan) -> dict[str, Any]:
    """``tools/train_net.py --eval-only`` on ``train_fp32``'s checkpoint (its main's steps)."""
    weights = os.path.join(plan.run_dir, "train_fp32", "model_final.pth")
    extra = ["MODEL.WEIGHTS", weights, "MODEL.CHIMERASEG.BUILD_TEACHER", "False"]
    cfg = _phase_cfg(plan, "eval_only", extra)
    model = ChimeraSegTrainer.build_model(cfg)
    load_trained_weights(model, cfg, resume=False)
    results = ChimeraSegTrainer.test(cfg, model)
    metrics = {k: float(v) for k, v in results.get("sem_seg", {}).items()}
    return {"phase": "eval_only", "rank": comm.get_rank(), "weights": weights, "metrics": metrics}


def _sgd_module(criterion: torch.nn.Module) -> SelectiveGlobalDistillation:
    """The criterion's SGD module.

    Raises:
        ValueError: when the config trains without SGD (nothing to compare across ranks).
    """
    found = [m for m in criterion.modules() if isinstance(m, SelectiveGlobalDistillation)]
    if not found:
        raise ValueError(
            "cluster check: the config trains without SGD (MODEL.CHIMERASEG.SGD.WEIGHT 0?); "
            "the cross-rank SGD check needs it"
        )
    return found[0]


class _ProbeHook(HookBase):
    """Per step: every loss of this rank and the SGD comparison with the global batch."""

    def __init__(self, probe: SGDProbe, autocast: Any) -> None:
        self.probe, self.autocast = probe, autocast
        self.losses: list[dict[str, float]] = []
        self.sgd: list[dict[str, Any]] = []

    def after_step(self) -> None:
        self.losses.append(dict(self.trainer.probe_losses))
        comparison = self.probe.compare(self.autocast)
        if comparison:
            self.sgd.append({"iter": self.trainer.iter, **comparison})


class _CheckTrainer(ChimeraSegTrainer):
    """The product's trainer with the probes, no evaluation hook and the planted faults."""

    faults: tuple[str, ...] = ()

    def __init__(self, cfg: Any, faults: tuple[str, ...]) -> None:
        type(self).faults = faults  # read by build_model, which runs inside __init__
        super().__init__(cfg)
        inner = unwrap_model(self.model).model
        probe = SGDProbe(_sgd_module(inner.criterion), self._skips_gather())
        self.probe_losses: dict[str, float] = {}
        inner.criterion.register_forward_hook(self._record_losses)
        autocast = None
        if cfg.SOLVER.AMP.ENABLED:
            dtype = torch.bfloat16 if cfg.SOLVER.AMP.PRECISION == "bfloat16" else torch.float16
            autocast = torch.autocast(torch.device(cfg.MODEL.DEVICE).type, dtype=dtype)
        self.probe_hook = _ProbeHook(probe, autocast)
        self.register_hooks([self.probe_hook])

    def _skips_gather(self) -> bool:
        return "skip-gather" in self.faults and comm.get_rank() == 1

    def _record_losses(self, module: torch.nn.Module, args: tuple, output: dict) -> None:
        self.probe_losses = {k: float(v.detach()) for k, v in output.items()}

    @classmethod
    def build_model(cls, cfg: Any) -> torch.nn.Module:
        """The product's model; with the ``no-syncbn`` fault its BatchNorm stays per process."""
        if "no-syncbn" in cls.faults:
            return build_model(cfg)
        return super().build_model(cfg)

    def build_hooks(self) -> list[HookBase]:
        """The product's hooks without the evaluation (``eval_only`` evaluates the result)."""
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]
