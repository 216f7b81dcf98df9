"""Cluster keys (``CLUSTER.*``): preemption signals, the fail-fast bound, the collective timeout.

One home for these defaults and for the exit statuses of a training process on a cluster; read by
:mod:`chimeraseg.d2.preemption`, :mod:`chimeraseg.d2.failfast` and :mod:`chimeraseg.d2.launch`
(docs/CLUSTER.md).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from datetime import timedelta

from detectron2.config import CfgNode as CN

# Exit status of a process that stopped for a preemption signal (after writing its checkpoint,
# or without one after a second signal or the deadline): 128 + SIGTERM, what a shell reports for
# a process killed by SIGTERM, so schedulers that retry "killed" jobs (torchrun --max-restarts,
# Kubernetes operators retrying 128-255) requeue it.
EXIT_PREEMPTED = 128 + signal.SIGTERM
# Exit status of a rank that stops because another rank raised (the fail-fast watchdog).
EXIT_PEER_FAILED = 70  # sysexits EX_SOFTWARE: an internal error (another rank's)


def parse_signal(name: str) -> signal.Signals:
    """The signal named ``name`` ("SIGTERM", "TERM" or "15").

    Raises:
        ValueError: naming the key ``CLUSTER.PREEMPT_SIGNALS`` and the value.
    """
    text = str(name).strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            pass
    else:
        found = getattr(signal.Signals, text if text.startswith("SIG") else f"SIG{text}", None)
        if found is not None and found not in (signal.SIGKILL, signal.SIGSTOP):
            return found
    raise ValueError(
        f"CLUSTER.PREEMPT_SIGNALS: {name!r} is not a signal that can be caught "
        "(use names such as SIGTERM, SIGUSR1)"
    )


@dataclass(frozen=True)
class ClusterSettings:
    """The ``CLUSTER.*`` keys, checked and converted.

    Attributes:
        preempt_signals: the signals that request a checkpoint and exit.
        preempt_check_period: iterations between two agreements of the ranks.
        preempt_deadline_s: seconds from the first signal to a forced exit.
        fail_fast_s: bound on the exit of the other ranks after one raised.
        collective_timeout: timeout of the process group's collectives.
    """

    preempt_signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)
    preempt_check_period: int = 1
    preempt_deadline_s: float = 25.0
    fail_fast_s: float = 30.0
    collective_timeout: timedelta = timedelta(seconds=1800)

    @classmethod
    def from_cfg(cls, cfg: CN) -> ClusterSettings:
        """Reads ``cfg.CLUSTER``.

        Raises:
            ValueError: naming the key and the value when it is out of range.
        """
        c = cfg.CLUSTER
        for key in ("PREEMPT_CHECK_PERIOD", "PREEMPT_DEADLINE_S", "FAIL_FAST_S"):
            if not c[key] > 0:
                raise ValueError(f"CLUSTER.{key} must be > 0, got {c[key]!r}")
        if not c.COLLECTIVE_TIMEOUT_S > 0:
            raise ValueError(
                f"CLUSTER.COLLECTIVE_TIMEOUT_S must be > 0, got {c.COLLECTIVE_TIMEOUT_S}"
            )
        return cls(
            preempt_signals=tuple(dict.fromkeys(parse_signal(s) for s in c.PREEMPT_SIGNALS)),
            preempt_check_period=int(c.PREEMPT_CHECK_PERIOD),
            preempt_deadline_s=float(c.PREEMPT_DEADLINE_S),
            fail_fast_s=float(c.FAIL_FAST_S),
            collective_timeout=timedelta(seconds=float(c.COLLECTIVE_TIMEOUT_S)),
        )


# The defaults of the CLUSTER keys: the settings object's own (written once, above).
_DEFAULTS = ClusterSettings()


def add_cluster_config(cfg: CN) -> None:
    """Adds the ``CLUSTER.*`` keys to a detectron2 config, in place."""
    cfg.CLUSTER = CN()
    # Signals that ask for a checkpoint and a clean exit at the next step boundary (names from
    # Python's signal module). SLURM sends SIGTERM, or the job's --signal (often SIGUSR1);
    # submitit's own signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL) is added under submitit.
    cfg.CLUSTER.PREEMPT_SIGNALS = [s.name for s in _DEFAULTS.preempt_signals]
    # The ranks agree on a received signal every this many iterations (one tiny all-reduce on the
    # CPU group); 1 = every iteration.
    cfg.CLUSTER.PREEMPT_CHECK_PERIOD = _DEFAULTS.preempt_check_period
    # Seconds after the first signal when the process exits even without its checkpoint; keep it
    # below the scheduler's grace time (SLURM: KillWait, 30 s by default, or the --signal lead).
    cfg.CLUSTER.PREEMPT_DEADLINE_S = _DEFAULTS.preempt_deadline_s
    # When a rank raises, every other rank exits within this many seconds with its error.
    cfg.CLUSTER.FAIL_FAST_S = _DEFAULTS.fail_fast_s
    # Seconds a collective may wait before the process group raises (detectron2's launch: 1800);
    # bounds a rank that dies without raising (killed, lost node).
    cfg.CLUSTER.COLLECTIVE_TIMEOUT_S = _DEFAULTS.collective_timeout.total_seconds()
