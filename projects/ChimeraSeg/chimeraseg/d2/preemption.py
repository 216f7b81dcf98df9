"""Preemption: a signal asks every rank for a checkpoint at the next step boundary, then an exit.

A scheduler sends SIGTERM (SLURM, Kubernetes, torchrun's agent) or the job's ``--signal`` (often
SIGUSR1) some seconds before it kills a job. :class:`PreemptionSignals` records such a signal in
the process that receives it; :class:`PreemptionHook` makes the ranks agree on it after a step
(one all-reduce of one integer on the CPU process group, so no CUDA host synchronisation), writes
the resumable checkpoint of that iteration on every rank (tagged in ``last_checkpoint``) and
raises :class:`TrainingPreempted`, which the launchers turn into the exit status
:data:`~chimeraseg.d2.cluster_config.EXIT_PREEMPTED` (or, under submitit, a requeue).

A second signal, or ``CLUSTER.PREEMPT_DEADLINE_S`` seconds after the first, exits at once without
waiting for the step (the checkpoints are written atomically, so the previous one stays intact).
Signals repeated within :data:`REPEAT_WINDOW_S` count once: a scheduler that signals both a
launcher and its workers (SLURM signals every process of the step; torchrun's agent forwards)
delivers the same request twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from chimeraseg.d2.cluster_config import EXIT_PREEMPTED, ClusterSettings

logger = logging.getLogger(__name__)

# Signals within this many seconds of the first one are the same request delivered twice.
REPEAT_WINDOW_S = 1.0

_ACTIVE: PreemptionSignals | None = None  # the handlers installed in this process, if any


class TrainingPreempted(BaseException):  # noqa: N818 -- a stop request, not an error
    """Raised on every rank after the preemption checkpoint was written.

    A ``BaseException``, like ``KeyboardInterrupt``: detectron2's training loop does not log it as
    an error, and its ``finally`` still runs the ``after_train`` hooks (``metrics.json`` and the
    event writers close cleanly).

    Args:
        iteration: the last iteration run; its checkpoint is the one to resume from.
    """

    def __init__(self, iteration: int) -> None:
        super().__init__(f"preempted after iteration {iteration}; checkpoint written")
        self.iteration = iteration


def flush_logs() -> None:
    """Flushes every handler of every logger (before ``os._exit``, which skips it)."""
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    for log in loggers:
        for handler in getattr(log, "handlers", ()):
            with contextlib.suppress(OSError, ValueError):  # a closed stream
                handler.flush()


class PreemptionSignals:
    """The preemption signal handlers of this process and what they received.

    Args:
        settings: the signals, the deadline (``CLUSTER.*``).
        exit_now: how a forced exit ends the process (``os._exit`` by default; tests replace it).
    """

    def __init__(
        self, settings: ClusterSettings, exit_now: Callable[[int], Any] = os._exit
    ) -> None:
        self.settings = settings
        self.received: signal.Signals | None = None
        self._first_at = 0.0
        self._finishing = False
        self._previous: dict[signal.Signals, Any] = {}
        self._deadline: threading.Timer | None = None
        self._exit_now = exit_now

    @property
    def requested(self) -> bool:
        """Whether a preemption signal arrived."""
        return self.received is not None

    def install(self) -> None:
        """Installs the handlers (main thread only) and makes them this process's active ones."""
        global _ACTIVE
        for sig in self.settings.preempt_signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        _ACTIVE = self

    def uninstall(self) -> None:
        """Restores the previous handlers and stops the deadline."""
        global _ACTIVE
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self._deadline is not None:
            self._deadline.cancel()
        if _ACTIVE is self:
            _ACTIVE = None

    def mark_finishing(self) -> None:
        """The checkpoint is written and the process exits (or requeues): the deadline stops and
        further signals are only logged."""
        self._finishing = True
        if self._deadline is not None:
            self._deadline.cancel()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Records the first signal and arms the deadline; a later one exits at once."""
        sig, now = signal.Signals(signum), time.monotonic()
        if self.received is None:
            self.received, self._first_at = sig, now
            deadline = self.settings.preempt_deadline_s
            logger.warning(
                "received %s: checkpoint at the next step boundary, then exit status %d; a second "
                "signal or the deadline (CLUSTER.PREEMPT_DEADLINE_S = %.0f s) exits without it",
                sig.name, EXIT_PREEMPTED, deadline,
            )  # fmt: skip
            self._deadline = threading.Timer(deadline, self.force_exit, args=("the deadline",))
            self._deadline.daemon = True
            self._deadline.start()
        elif self._finishing:
            logger.info("received %s while exiting after the preemption checkpoint", sig.name)
        elif now - self._first_at >= REPEAT_WINDOW_S:
            self.force_exit(f"a second signal ({sig.name})")

    def force_exit(self, reason: str) -> None:
        """Exits with :data:`EXIT_PREEMPTED` at once, without the checkpoint of this step."""
        logger.error(
            "preemption: %s came before the checkpoint; exiting now with status %d (a resume "
            "continues from the last complete checkpoint)", reason, EXIT_PREEMPTED,
        )  # fmt: skip
        flush_logs()
        self._exit_now(EXIT_PREEMPTED)


def active_preemption_signals() -> PreemptionSignals | None:
    """The handlers a launcher installed in this process (None when none did)."""
    return _ACTIVE


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is True on any rank: one all-reduce of one integer on the CPU group."""
    if comm.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    group = comm._get_global_gloo_group()  # gloo: a CPU tensor, no CUDA synchronisation
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX, group=group)
    return bool(value.item())


def cpu_barrier() -> None:
    """A barrier on the CPU (gloo) group; a no-op in a single process."""
    if comm.get_world_size() > 1:
        torch.distributed.barrier(group=comm._get_global_gloo_group())


class PreemptionHook(HookBase):
    """Checkpoints and stops every rank at the step boundary after a preemption signal.

    Every ``CLUSTER.PREEMPT_CHECK_PERIOD`` iterations the ranks agree whether any received a
    signal; if one did, all write the resumable checkpoint of the iteration just finished (``save``,
    collective, tags ``last_checkpoint``), wait for each other, and raise
    :class:`TrainingPreempted`. A signal at the last iteration lets the run finish normally. It
    must be the last hook, so that the others see the iteration's ``after_step``.

    Uses the handlers a launcher installed (:func:`active_preemption_signals`), or installs its
    own for the training and removes them afterwards.

    Args:
        settings: the ``CLUSTER.*`` settings.
        save: writes the resumable checkpoint of an iteration on every rank (collective).
    """

    def __init__(self, settings: ClusterSettings, save: Callable[[int], None]) -> None:
        self._settings, self._save = settings, save
        self._signals: PreemptionSignals | None = None
        self._owns_signals = False

    def before_train(self) -> None:
        """Uses the launcher's handlers or installs its own."""
        self._signals = active_preemption_signals()
        if self._signals is None and threading.current_thread() is threading.main_thread():
            self._signals, self._owns_signals = PreemptionSignals(self._settings), True
            self._signals.install()

    def after_step(self) -> None:
        """Agrees on a received signal; checkpoints and raises :class:`TrainingPreempted`."""
        iteration = self.trainer.iter
        if self._signals is None or (iteration + 1) % self._settings.preempt_check_period:
            return
        if not any_rank(self._signals.requested):
            return
        if iteration + 1 >= self.trainer.max_iter:
            logger.warning("preemption requested at the last iteration: finishing the run")
            return
        logger.warning("preemption: writing the checkpoint of iteration %d", iteration)
        self._save(iteration)
        cpu_barrier()  # every rank's files and rank 0's last_checkpoint tag are written
        self._signals.mark_finishing()
        raise TrainingPreempted(iteration)

    def after_train(self) -> None:
        """Removes the handlers this hook installed."""
        if self._owns_signals and self._signals is not None:
            self._signals.uninstall()
            self._signals, self._owns_signals = None, False
