"""Fail fast: when one rank raises, every other rank exits within a bounded time with its error.

Without it the other ranks wait in their next collective until the process group's timeout
(30 minutes by default). The mechanism is the same under every launcher (detectron2's ``launch``,
torchrun, submitit): the rank that raises writes its error into the process group's key-value
store (the ``TCPStore`` every rank already reaches), and a daemon thread on every rank polls that
key. A rank that finds it logs the failing rank's error, acknowledges, and exits with
:data:`~chimeraseg.d2.cluster_config.EXIT_PEER_FAILED`; the failing rank waits (at most
``CLUSTER.FAIL_FAST_S``) for the acknowledgements, so that the store (hosted by rank 0's process
or the launcher) outlives the reads, then raises its error as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch.distributed as dist

from chimeraseg.d2.cluster_config import EXIT_PEER_FAILED
from chimeraseg.d2.preemption import flush_logs

logger = logging.getLogger(__name__)

# Store keys (under torchrun the store is keyed by the restart attempt, see launch.py).
ERROR_KEY = "chimeraseg/fail_fast/error"
ACK_KEY = "chimeraseg/fail_fast/acknowledged"
# Longest error text put into the store (the full traceback stays in the failing rank's log).
MAX_MESSAGE_CHARS = 2000
# The watchdog polls this many times per CLUSTER.FAIL_FAST_S (at least once a second).
POLLS_PER_BOUND = 4


def describe_failure(rank: int, error: BaseException) -> str:
    """``"rank R raised Type: message"``, cut to :data:`MAX_MESSAGE_CHARS`."""
    return f"rank {rank} raised {type(error).__name__}: {error}"[:MAX_MESSAGE_CHARS]


class FailFastWatchdog:
    """Polls the process group's store for another rank's error; reports this rank's own.

    Call :meth:`start` after ``init_process_group``, :meth:`report` when the training raises and
    :meth:`stop` when it ends. In a single process it does nothing.

    Args:
        fail_fast_s: the bound (``CLUSTER.FAIL_FAST_S``): other ranks exit within it.
        exit_now: how a rank whose peer failed ends (``os._exit`` by default; tests replace it).
    """

    def __init__(self, fail_fast_s: float, exit_now: Callable[[int], Any] = os._exit) -> None:
        self.fail_fast_s = fail_fast_s
        self._exit_now = exit_now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: Any = None
        self._rank, self._world_size = 0, 1

    def start(self, store: Any = None, rank: int = 0, world_size: int = 1) -> None:
        """Starts the polling thread.

        Args:
            store: the key-value store all ranks reach; None = the default process group's
                (nothing is started without a process group of more than one rank).
            rank: this rank (with ``store``).
            world_size: number of ranks (with ``store``).
        """
        if store is None:
            if not (dist.is_available() and dist.is_initialized()):
                return
            store = dist.distributed_c10d._get_default_store()
            rank, world_size = dist.get_rank(), dist.get_world_size()
        if world_size == 1:
            return
        self._store, self._rank, self._world_size = store, rank, world_size
        interval = min(1.0, self.fail_fast_s / POLLS_PER_BOUND)
        self._thread = threading.Thread(
            target=self._poll, args=(interval,), name="chimeraseg-fail-fast", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops polling (the training ended, normally or not)."""
        self._stop.set()

    def report(self, error: BaseException) -> None:
        """Publishes this rank's error (the first one wins) and waits for the others to see it."""
        if self._store is None:
            return
        self._stop.set()  # this rank's own error is not a peer's
        message = describe_failure(self._rank, error)
        try:
            self._store.compare_set(ERROR_KEY, "", message)
        except Exception as e:  # the store is gone: the other ranks cannot be told
            logger.warning("fail fast: could not publish this rank's error (%s)", e)
            return
        self._wait_for_acknowledgements()

    def _wait_for_acknowledgements(self) -> None:
        """Waits until every other rank has read the error, at most ``fail_fast_s``."""
        deadline = time.monotonic() + self.fail_fast_s
        try:
            while self._store.add(ACK_KEY, 0) < self._world_size - 1:
                if time.monotonic() > deadline:
                    logger.warning(
                        "fail fast: not every rank acknowledged within %.0f s", self.fail_fast_s
                    )
                    return
                time.sleep(0.05)
        except Exception:  # the store's host (rank 0) read the error and exited
            return

    def _poll(self, interval: float) -> None:
        """Waits for a peer's error; then logs it, acknowledges and exits the process."""
        while not self._stop.wait(interval):
            try:
                if not self._store.check([ERROR_KEY]):
                    continue
                message = self._store.get(ERROR_KEY).decode("utf-8", "replace")
            except Exception:  # the store's host exited (e.g. rank 0 finished first): stop polling
                return
            if self._stop.is_set():
                return
            self._exit_for_peer(message)
            return

    def _exit_for_peer(self, message: str) -> None:
        """Logs the peer's error on this rank (log file and stderr), acknowledges, exits."""
        text = (
            f"fail fast: {message}; rank {self._rank} stops (exit status {EXIT_PEER_FAILED}, "
            "CLUSTER.FAIL_FAST_S)"
        )
        logger.error(text)
        print(text, file=sys.stderr, flush=True)
        flush_logs()
        with contextlib.suppress(Exception):  # the failing rank may have stopped waiting
            self._store.add(ACK_KEY, 1)
        self._exit_now(EXIT_PEER_FAILED)
