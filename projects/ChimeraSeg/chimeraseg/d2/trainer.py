"""Training: AdamW with LR multipliers, the poly-with-warm-up schedule and the trainer.

``ChimeraSegTrainer`` is the ``DefaultTrainer`` subclass ``tools/train_net.py`` runs; it is kept in
the package so ``tools/run_demo.py`` and the tests use the very same class. Its parts live next to
it: the checkpointer and :func:`load_trained_weights` in :mod:`chimeraseg.d2.checkpoint` (both
re-exported here), the per-iteration ``metrics.json`` hook in :mod:`chimeraseg.d2.hooks` and the
CPU-capable DDP helpers in :mod:`chimeraseg.d2.ddp`.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, HookBase, SimpleTrainer, TrainerBase
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.modeling import build_model
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, EventWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler
from torch import nn

from chimeraseg.d2.amp import DeviceAMPTrainer, amp_precision
from chimeraseg.d2.checkpoint import (
    CHECKPOINT_METADATA_KEY,
    ChimeraSegCheckpointer,
    WeightsMismatchError,
    check_start_iteration,
    load_trained_weights,
)
from chimeraseg.d2.cluster_config import ClusterSettings
from chimeraseg.d2.config_checks import small_batch_warning
from chimeraseg.d2.data.register_common import dataset_dicts
from chimeraseg.d2.data.resumable import TrainingStream, build_resumable_train_loader
from chimeraseg.d2.ddp import broadcast_persistent_buffers, unwrap_model, wrap_ddp
from chimeraseg.d2.gpu_switches import (
    apply_gpu_switches,
    compile_training_modules,
    fused_optimizer_kwargs,
    pin_memory,
)
from chimeraseg.d2.hooks import PerIterationJSONWriter
from chimeraseg.d2.preemption import PreemptionHook
from chimeraseg.d2.training_state import TrainingState, preserved_global_rng
from chimeraseg.d2.tta import SemanticSegmentorWithTTA
from chimeraseg.utils.sync_batchnorm import convert_sync_batchnorm

# The checkpoint names are re-exported: tools/train_net.py and tools/demo.py import them from here.
__all__ = [
    "CHECKPOINT_METADATA_KEY",
    "ChimeraSegCheckpointer",
    "ChimeraSegTrainer",
    "PerIterationJSONWriter",
    "WeightsMismatchError",
    "broadcast_persistent_buffers",
    "build_lr_scheduler",
    "build_optimizer",
    "build_param_groups",
    "load_trained_weights",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)

# Parameters whose name ends with one of these are positional embeddings / tokens (no decay).
_EMBED_SUFFIXES = ("pos_embed", "cls_token", "absolute_pos_embed", "positional_embedding")
_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """``WarmupPolyLR``: linear warm-up over ``SOLVER.WARMUP_ITERS`` then poly decay.

    Made of detectron2's and fvcore's own pieces: ``LRMultiplier`` and ``WarmupParamScheduler``
    around ``PolynomialDecayParamScheduler`` (factor ``(1 - t/T) ** power``); other
    ``SOLVER.LR_SCHEDULER_NAME`` values go to detectron2's builder.
    """
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return d2_build_lr_scheduler(cfg, optimizer)
    poly = PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_LR_POWER)
    warmup_length = min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0)
    multiplier = WarmupParamScheduler(
        poly, cfg.SOLVER.WARMUP_FACTOR, warmup_length, cfg.SOLVER.WARMUP_METHOD
    )
    return LRMultiplier(optimizer, multiplier=multiplier, max_iter=cfg.SOLVER.MAX_ITER)


def _lr_multipliers(model: nn.Module, cfg: CfgNode) -> dict[int, float]:
    """Maps ``id(param)`` to its LR multiplier from the model's ``param_group_modules()``."""
    if not hasattr(model, "param_group_modules"):
        return {}
    factors = {"backbone": cfg.SOLVER.BACKBONE_MULTIPLIER, "head": cfg.SOLVER.HEAD_MULTIPLIER}
    out: dict[int, float] = {}
    for group, modules in model.param_group_modules().items():
        for module in modules:
            for p in module.parameters():
                out[id(p)] = factors[group]
    return out


def build_param_groups(cfg: CfgNode, model: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters grouped by (lr, weight decay).

    Backbone params get ``BASE_LR * BACKBONE_MULTIPLIER``, decoder and CSH params
    ``BASE_LR * HEAD_MULTIPLIER``; norm parameters ``WEIGHT_DECAY_NORM``, positional embeddings
    ``WEIGHT_DECAY_EMBED``; everything else ``WEIGHT_DECAY``. Frozen parameters are left out.
    """
    base_lr, multipliers = cfg.SOLVER.BASE_LR, _lr_multipliers(model, cfg)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for _, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            decay = cfg.SOLVER.WEIGHT_DECAY
            if isinstance(module, _NORM_TYPES):
                decay = cfg.SOLVER.WEIGHT_DECAY_NORM
            elif name.endswith(_EMBED_SUFFIXES):
                decay = cfg.SOLVER.WEIGHT_DECAY_EMBED
            lr = base_lr * multipliers.get(id(param), 1.0)
            groups.setdefault((lr, decay), []).append(param)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (or SGD) over :func:`build_param_groups`, with detectron2's gradient clipping
    (the fused kernel on CUDA with ``SOLVER.FUSED``, see :func:`fused_optimizer_kwargs`)."""
    params = build_param_groups(cfg, model)
    if not params:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    fused = fused_optimizer_kwargs(cfg)
    if cfg.SOLVER.OPTIMIZER == "ADAMW":
        opt_cls = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
        return opt_cls(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS), **fused)
    opt_cls = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
    return opt_cls(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, **fused)


class ChimeraSegTrainer(DefaultTrainer):
    """``DefaultTrainer`` with the zero-shot mapper and evaluator, AdamW with LR multipliers, the
    poly schedule, CPU-capable DDP and the metadata-aware :class:`ChimeraSegCheckpointer`.
    """

    def __init__(self, cfg: CfgNode) -> None:
        # Same construction order as DefaultTrainer, with our DDP wrapper and checkpointer.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        apply_gpu_switches(cfg)  # also for entry points without default_setup
        model = self.build_model(cfg)
        if cfg.SOLVER.COMPILE:
            compile_training_modules(model)  # in place: state-dict keys stay the eager ones
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model, cfg)
        self._trainer = self.build_training_loop(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = ChimeraSegCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        if isinstance(data_loader, TrainingStream):  # checkpoints carry its position and RNGs
            self.checkpointer.training_state = TrainingState(model, data_loader, cfg)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())
        warning = small_batch_warning(cfg, comm.get_world_size())
        if warning and comm.is_main_process():
            logger.warning(warning)

    @staticmethod
    def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
        """detectron2's rescaling to ``num_workers`` (``SOLVER.REFERENCE_WORLD_SIZE``), plus the
        SGD K schedule: ``K_STEP`` scales with the batch so that K follows the same curve over
        the (rescaled) iterations. The per-GPU batch stays; the global batch, from which SGD and
        SAM draw their negatives, changes, and a warning says so (GETTING_STARTED.md, 'Fewer GPUs').
        """
        reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
        scaled = DefaultTrainer.auto_scale_workers(cfg, num_workers)
        if scaled is cfg:
            return cfg
        frozen = scaled.is_frozen()
        scaled.defrost()
        scaled.MODEL.CHIMERASEG.SGD.K_STEP = (
            cfg.MODEL.CHIMERASEG.SGD.K_STEP * num_workers / reference
        )
        if frozen:
            scaled.freeze()
        logger.warning(
            "SOLVER.REFERENCE_WORLD_SIZE %d, running on %d: global batch %d -> %d (SGD and SAM "
            "contrast the images of the global batch, so this changes the method, not only "
            "the schedule); BASE_LR, MAX_ITER and MODEL.CHIMERASEG.SGD.K_STEP rescaled",
            reference, num_workers, cfg.SOLVER.IMS_PER_BATCH, scaled.SOLVER.IMS_PER_BATCH,
        )  # fmt: skip
        return scaled

    @staticmethod
    def build_training_loop(
        cfg: CfgNode, model: nn.Module, data_loader: Any, optimizer: torch.optim.Optimizer
    ) -> SimpleTrainer:
        """``SimpleTrainer``, or with ``SOLVER.AMP.ENABLED`` the device-aware AMP loop."""
        if not cfg.SOLVER.AMP.ENABLED:
            return SimpleTrainer(model, data_loader, optimizer)
        device_type = torch.device(cfg.MODEL.DEVICE).type
        return DeviceAMPTrainer(
            model, data_loader, optimizer, device_type=device_type, precision=amp_precision(cfg)
        )

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        """Builds the meta-architecture; converts BatchNorm to SyncBatchNorm under DDP (on the
        CPU too: :class:`~chimeraseg.utils.sync_batchnorm.CPUSyncBatchNorm` syncs over gloo)."""
        model = build_model(cfg)
        if comm.get_world_size() > 1:
            model = convert_sync_batchnorm(model, torch.device(cfg.MODEL.DEVICE).type)
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer of :func:`build_optimizer`."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(
        cls, cfg: CfgNode, optimizer: torch.optim.Optimizer
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The schedule of :func:`build_lr_scheduler`."""
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> TrainingStream:
        """The resumable training stream of ``DATASETS.TRAIN`` with the zero-shot mapper."""
        from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper

        dicts = dataset_dicts(cfg.DATASETS.TRAIN, cfg.DATASETS.SKIP_IMAGES_WITHOUT_LABEL)
        mapper = ZeroShotDatasetMapper(cfg, is_train=True)
        return build_resumable_train_loader(cfg, mapper, dicts, pin_memory=pin_memory(cfg))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Any:
        """The evaluation loader of ``dataset_name`` with the zero-shot mapper."""
        from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper

        dicts = dataset_dicts([dataset_name], cfg.DATASETS.SKIP_IMAGES_WITHOUT_LABEL)
        mapper = ZeroShotDatasetMapper(cfg, is_train=False)
        return build_detection_test_loader(
            dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    def train(self) -> dict[str, Any] | None:
        """Trains; returns the results of the evaluation after the last iteration, if any."""
        check_start_iteration(self.start_iter, self.max_iter, self.cfg.OUTPUT_DIR)
        super().train()
        return getattr(self, "_last_eval_results", None)  # set by DefaultTrainer's EvalHook

    def resume_or_load(self, resume: bool = True) -> None:
        """detectron2's ``resume_or_load``; then the training state of the checkpoint (data
        stream position and seed, every RNG) is restored, or without one (a checkpoint written
        before exact resume) the stream continues at the checkpoint's iteration."""
        super().resume_or_load(resume=resume)
        state = self.checkpointer.loaded_training_state
        if state is not None:
            self.checkpointer.training_state.restore(state, self.checkpointer.resumed_from)
        elif isinstance(self._trainer.data_loader, TrainingStream):
            self._trainer.data_loader.start_at(self.start_iter)

    def save_resumable_checkpoint(self, iteration: int) -> None:
        """Writes ``model_{iteration:07d}.pth`` and every rank's state file, tagged as the last
        checkpoint; ``--resume`` continues with iteration ``iteration + 1`` as if never stopped.

        Collective: every rank calls it, after ``iteration`` has finished.
        """
        self.checkpointer.save(f"model_{iteration:07d}", iteration=iteration)

    def build_writers(self) -> list[EventWriter]:
        """The console and TensorBoard writers (every 20 iterations); ``metrics.json`` is written
        every iteration by :class:`PerIterationJSONWriter` (see :meth:`build_hooks`)."""
        return [CommonMetricPrinter(self.max_iter), TensorboardXWriter(self.cfg.OUTPUT_DIR)]

    def build_hooks(self) -> list[HookBase]:
        """detectron2's hooks, :class:`PerIterationJSONWriter` (main process) and, last,
        :class:`~chimeraseg.d2.preemption.PreemptionHook`."""
        hooks = super().build_hooks()
        if not comm.is_main_process() and self.checkpointer.training_state is not None:
            # detectron2 checkpoints on the main process only; with training-state files every
            # rank writes its own (the .pth stays rank 0's), before the evaluation as there.
            at = next(i for i, hook in enumerate(hooks) if isinstance(hook, d2_hooks.EvalHook))
            period = self.cfg.SOLVER.CHECKPOINT_PERIOD
            hooks.insert(at, d2_hooks.PeriodicCheckpointer(self.checkpointer, period))
        if comm.is_main_process():
            os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
            path = os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")
            hooks.append(PerIterationJSONWriter(path, fsync_seconds=self.cfg.METRICS_FSYNC_SECONDS))
        # Last, so that every other hook has seen the step before a preemption stops the run.
        settings = ClusterSettings.from_cfg(self.cfg)
        hooks.append(PreemptionHook(settings, save=self.save_resumable_checkpoint))
        return hooks

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None
    ) -> Any:
        """The zero-shot evaluator of ``dataset_name`` (output in ``OUTPUT_DIR/inference``)."""
        from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator

        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return ZeroShotSemSegEvaluator.from_config(cfg, dataset_name, output_dir=output_folder)

    @classmethod
    def test(
        cls, cfg: CfgNode, model: nn.Module, evaluators: list[Any] | None = None
    ) -> dict[str, Any]:
        """Evaluates on every ``DATASETS.TEST`` set, each with its own vocabulary (with flip /
        multi-scale augmentation when ``TEST.AUG.ENABLED``, see :mod:`chimeraseg.d2.tta`).

        Returns:
            The evaluator results; ``{dataset: results}`` when there are several test sets.
        """
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(
                f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} DATASETS.TEST entries"
            )
        inner, results = unwrap_model(model), OrderedDict()
        broadcast_persistent_buffers(inner)  # per-process BatchNorm statistics -> rank 0's
        for index, name in enumerate(cfg.DATASETS.TEST):
            if hasattr(inner, "set_vocabulary_from_dataset"):
                inner.set_vocabulary_from_dataset(name)
            loader = cls.build_test_loader(cfg, name)
            evaluator = evaluators[index] if evaluators else cls.build_evaluator(cfg, name)
            predictor = SemanticSegmentorWithTTA(model, cfg=cfg) if cfg.TEST.AUG.ENABLED else model
            with preserved_global_rng():  # an evaluation during training leaves its RNGs alone
                results[name] = inference_on_dataset(predictor, loader, evaluator)
            if comm.is_main_process():
                logger.info("Evaluation results for %s in csv format:", name)
                print_csv_format(results[name])
        return next(iter(results.values())) if len(results) == 1 else results
