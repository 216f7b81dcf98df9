"""Starting the training processes: detectron2's ``launch``, torchrun, or a submitit task.

Every path ends in :func:`run_training_process`, the body of each rank: the preemption signal
handlers (:mod:`chimeraseg.d2.preemption`), the fail-fast watchdog
(:mod:`chimeraseg.d2.failfast`) and the training function. The process group's collective timeout
is ``CLUSTER.COLLECTIVE_TIMEOUT_S`` on every path.

- ``python tools/train_net.py --num-gpus N``: detectron2's ``launch`` spawns N processes; the
  parent forwards the preemption signals to them and exits with the status they stopped with.
- ``torchrun --nproc_per_node N tools/train_net.py``: each process joins one world of
  ``WORLD_SIZE`` ranks (``env://``, ``LOCAL_RANK``) instead of spawning; a restarted worker
  (``TORCHELASTIC_RESTART_COUNT > 0``) resumes from the last checkpoint.
- ``tools/submit_slurm.py``: :mod:`chimeraseg.d2.submitit_job` builds the world from SLURM's
  environment and calls :func:`init_distributed` and :func:`run_training_process`.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from detectron2.engine import launch
from detectron2.utils import comm

from chimeraseg.d2.cluster_config import EXIT_PEER_FAILED, EXIT_PREEMPTED, ClusterSettings
from chimeraseg.d2.config import get_chimeraseg_cfg
from chimeraseg.d2.failfast import FailFastWatchdog
from chimeraseg.d2.preemption import PreemptionSignals, TrainingPreempted

logger = logging.getLogger(__name__)

MainFunc = Callable[[argparse.Namespace], Any]
# Variables torchrun (torch.distributed.run) sets in every worker.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


@dataclass(frozen=True)
class WorldSpec:
    """Where one process sits in the world, and how the process group meets.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine (its GPU index).
        local_world_size: processes on this machine.
        init_method: ``init_process_group``'s ``init_method`` (``env://``, ``tcp://host:port``).
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    init_method: str

    @classmethod
    def from_torchrun_environment(cls) -> WorldSpec:
        """The world torchrun describes in ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` ..."""
        env = os.environ
        return cls(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env["LOCAL_RANK"]),
            local_world_size=int(env["LOCAL_WORLD_SIZE"]),
            init_method="env://",
        )


def under_torchrun() -> bool:
    """Whether torchrun (or another elastic agent) started this process."""
    return "TORCHELASTIC_RUN_ID" in os.environ or all(v in os.environ for v in TORCHRUN_VARIABLES)


def torchrun_restart_count() -> int:
    """How many times torchrun restarted the workers (``TORCHELASTIC_RESTART_COUNT``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def cluster_settings_of(args: argparse.Namespace) -> ClusterSettings:
    """The ``CLUSTER.*`` settings of ``--config-file`` and the ``KEY VALUE`` overrides."""
    return ClusterSettings.from_cfg(get_chimeraseg_cfg(args.config_file, list(args.opts)))


def init_distributed(world: WorldSpec, settings: ClusterSettings) -> None:
    """``init_process_group`` (NCCL with GPUs, gloo without) and detectron2's local group.

    Sets what detectron2's ``launch`` sets in the processes it spawns, so ``comm.get_local_rank``
    and SyncBatchNorm work: the per-machine process group, the CUDA device of ``local_rank``.
    """
    has_gpu = torch.cuda.is_available()
    store = None
    if world.init_method == "env://" and under_torchrun():
        # torchrun's agent serves the store and keeps it across restarts: without a prefix per
        # attempt, restarted workers would read the dead workers' addresses from it.
        store, _, _ = next(dist.rendezvous("env://", timeout=settings.collective_timeout))
        store = dist.PrefixStore(f"chimeraseg/attempt_{torchrun_restart_count()}", store)
    dist.init_process_group(
        backend="nccl" if has_gpu else "gloo",
        init_method=None if store is not None else world.init_method,
        store=store,
        world_size=world.world_size,
        rank=world.rank,
        timeout=settings.collective_timeout,
    )
    comm.create_local_process_group(world.local_world_size)
    if has_gpu:
        torch.cuda.set_device(world.local_rank)
    comm.synchronize()


def run_training_process(
    main_func: MainFunc, args: argparse.Namespace, settings: ClusterSettings
) -> Any:
    """Runs ``main_func(args)`` on this rank with the preemption handlers and fail fast.

    Raises:
        TrainingPreempted: after the preemption checkpoint (the caller exits or requeues).
        BaseException: whatever ``main_func`` raised, after the other ranks were told.
    """
    signals = PreemptionSignals(settings)
    signals.install()
    watchdog = FailFastWatchdog(settings.fail_fast_s)
    watchdog.start()
    preempted = False
    try:
        return main_func(args)
    except TrainingPreempted:
        preempted = True  # the handlers stay: further signals are logged while it exits
        raise
    except BaseException as e:
        if not (isinstance(e, SystemExit) and e.code in (None, 0)):
            logger.error("rank %d failed: %s: %s", comm.get_rank(), type(e).__name__, e)
            watchdog.report(e)
        raise
    finally:
        watchdog.stop()
        if not preempted:
            signals.uninstall()


def _run_and_exit_if_preempted(
    main_func: MainFunc, args: argparse.Namespace, settings: ClusterSettings
) -> Any:
    """:func:`run_training_process`; a preempted run exits with :data:`EXIT_PREEMPTED`."""
    try:
        return run_training_process(main_func, args, settings)
    except TrainingPreempted as e:
        logger.warning("%s; exiting with status %d to be requeued", e, EXIT_PREEMPTED)
        sys.exit(EXIT_PREEMPTED)


def _forward_to_children(signum: int, frame: FrameType | None) -> None:
    """Passes a preemption signal the launching parent received on to its training processes."""
    for child in multiprocessing.active_children():
        if child.pid is not None:
            os.kill(child.pid, signum)


def _launch_spawned(
    main_func: MainFunc, args: argparse.Namespace, settings: ClusterSettings
) -> None:
    """detectron2's ``launch`` of ``--num-gpus`` processes per machine."""
    previous = {}
    if args.num_gpus * args.num_machines > 1:
        previous = {
            sig: signal.signal(sig, _forward_to_children) for sig in settings.preempt_signals
        }
    try:
        launch(
            _run_and_exit_if_preempted,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(main_func, args, settings),
            timeout=settings.collective_timeout,
        )
    except torch.multiprocessing.ProcessExitedException as e:
        if e.exit_code in (EXIT_PREEMPTED, EXIT_PEER_FAILED):
            sys.exit(e.exit_code)  # preempted (requeue) / stopped for another rank's error
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch_training(main_func: MainFunc, args: argparse.Namespace) -> None:
    """Runs ``main_func(args)`` on every process of the job, however it was started.

    Under torchrun this process is one rank of the world (no spawning; ``--num-gpus`` and
    ``--dist-url`` are ignored) and ``--resume`` is implied after a restart; otherwise
    detectron2's ``launch`` spawns ``--num-gpus`` processes.

    Args:
        main_func: the training function (``tools/train_net.py``'s ``main``).
        args: detectron2's parsed command line (``--config-file``, ``opts``, ``--resume`` ...).
    """
    settings = cluster_settings_of(args)
    if not under_torchrun():
        _launch_spawned(main_func, args, settings)
        return
    if torchrun_restart_count() > 0 and not args.resume:
        logger.warning(
            "torchrun restart %d: resuming from the last checkpoint (--resume implied)",
            torchrun_restart_count(),
        )
        args.resume = True
    init_distributed(WorldSpec.from_torchrun_environment(), settings)
    _run_and_exit_if_preempted(main_func, args, settings)
