"""The training job ``tools/submit_slurm.py`` hands to submitit: one task per GPU, requeued on
preemption and at the time limit.

Each task reads its place in the world from submitit's ``JobEnvironment`` (SLURM's ``SLURM_PROCID``,
``SLURM_LOCALID``, ``SLURM_NTASKS``, the node list; the local executor's equivalents), joins the
process group at the first node's address, and runs ``tools/train_net.py``'s ``main`` through
:func:`~chimeraseg.d2.launch.run_training_process` (preemption handlers and fail fast).

Requeue: submitit signals the job (``SUBMITIT_PREEMPT_SIGNAL``, SIGUSR2 by default) before the time
limit; that signal, SIGTERM and the ``CLUSTER.PREEMPT_SIGNALS`` all end in the preemption
checkpoint of :mod:`chimeraseg.d2.preemption`. Then rank 0 hands over to submitit's own handler,
which calls :meth:`TrainingJob.__submitit_checkpoint__` (the same job with ``--resume``) and
requeues it. A signal before the training started requeues directly, resuming from the last
checkpoint there is.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit

from chimeraseg.d2.cluster_config import EXIT_PREEMPTED
from chimeraseg.d2.launch import (
    WorldSpec,
    cluster_settings_of,
    init_distributed,
    run_training_process,
)
from chimeraseg.d2.preemption import TrainingPreempted

logger = logging.getLogger(__name__)

# The rendezvous port of a job without --master-port: derived from its job id, in this range.
PORT_RANGE = (20000, 60000)


def job_port(job_id: str) -> int:
    """A rendezvous port derived from the job id (the same after a requeue)."""
    digest = int(hashlib.sha256(job_id.encode()).hexdigest(), 16)
    low, high = PORT_RANGE
    return low + digest % (high - low)


def load_main(train_script: str) -> Any:
    """The ``main`` function of ``train_script`` (``tools/train_net.py``), loaded from its file."""
    spec = importlib.util.spec_from_file_location("chimeraseg_submitit_train_net", train_script)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load the training script {train_script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


class TrainingJob(submitit.helpers.Checkpointable):
    """One task of the training job (submitit pickles it and calls it in every task).

    Args:
        train_script: path of ``tools/train_net.py``.
        args: ``train_net.py``'s parsed arguments (``--config-file``, ``opts``, ``--resume``).
        master_port: the rendezvous port; None = derived from the job id.
    """

    def __init__(
        self, train_script: str, args: argparse.Namespace, master_port: int | None = None
    ) -> None:
        self.train_script = str(Path(train_script).resolve())
        self.args = args
        self.master_port = master_port

    def world(self) -> WorldSpec:
        """This task's place in the job, from submitit's ``JobEnvironment``."""
        env = submitit.JobEnvironment()
        port = self.master_port or job_port(env.job_id)
        return WorldSpec(
            rank=env.global_rank,
            world_size=env.num_tasks,
            local_rank=env.local_rank,
            local_world_size=env.num_tasks // env.num_nodes,
            init_method=f"tcp://{env.hostnames[0]}:{port}",
        )

    def __call__(self) -> Any:
        """Trains on this task; after a preemption checkpoint, requeues (rank 0) and exits."""
        requeue_signal = submitit.JobEnvironment._usr_sig()
        submitit_handler = signal.getsignal(requeue_signal)  # checkpoint + requeue (rank 0)
        settings = cluster_settings_of(self.args)
        signals = tuple(dict.fromkeys((*settings.preempt_signals, requeue_signal)))
        settings = replace(settings, preempt_signals=signals)
        world = self.world()
        logger.info("submitit task: rank %d of %d (%s)", world.rank, world.world_size,
                    world.init_method)  # fmt: skip
        init_distributed(world, settings)
        try:
            return run_training_process(load_main(self.train_script), self.args, settings)
        except TrainingPreempted as e:
            logger.warning("%s; requeuing the job", e)
            if world.rank == 0 and callable(submitit_handler):
                submitit_handler(requeue_signal, None)  # exits (requeued) or raises (not)
            sys.exit(EXIT_PREEMPTED)

    def __submitit_checkpoint__(
        self, *args: Any, **kwargs: Any
    ) -> submitit.helpers.DelayedSubmission:
        """The same job with ``--resume``: submitit requeues it after a preemption or timeout."""
        resumed = copy.copy(self.args)
        resumed.resume = True
        job = TrainingJob(self.train_script, resumed, self.master_port)
        return submitit.helpers.DelayedSubmission(job)
