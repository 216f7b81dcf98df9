"""The ``metrics.json`` training log (one JSON object per line, detectron2's format).

:class:`MetricsLog` appends rows and flushes each write to the operating system, so a killed
process (``SIGKILL``, a preempted job, a crash) loses at most the row being written. Reaching the
disk (``fsync``) is left off the training step: a background thread fsyncs at most once every
``fsync_seconds``, and :meth:`MetricsLog.close` fsyncs the rest, so only a crash of the machine
itself (power loss, kernel panic, a lost file server) can lose the rows of the last
``fsync_seconds`` (docs/GPU.md, 'metrics.json and the critical path').

A killed run may leave rows of iterations after its last checkpoint (and a half-written last
line); a run resumed from that checkpoint repeats those iterations. :func:`drop_rows_from`
removes them first, so the log holds every iteration exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable

from chimeraseg.utils.checkpoint_io import atomic_write_text

__all__ = ["DEFAULT_FSYNC_SECONDS", "MetricsLog", "drop_rows_from"]

logger = logging.getLogger(__name__)

# At most one fsync of metrics.json per this many seconds (the METRICS_FSYNC_SECONDS default).
DEFAULT_FSYNC_SECONDS = 10.0


class MetricsLog:
    """Appends ``{"iteration": i, <metric>: value, ...}`` rows to a JSON-lines file.

    Args:
        path: the log file (created if missing, appended to otherwise).
        fsync_seconds: fsync at most once per this many seconds, from a background thread;
            0 = fsync every write on the caller's thread.
        clock: monotonic seconds (tests pass a fake clock).
    """

    def __init__(
        self,
        path: str,
        fsync_seconds: float = DEFAULT_FSYNC_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not fsync_seconds >= 0:
            raise ValueError(f"MetricsLog: fsync_seconds = {fsync_seconds!r} must be >= 0")
        self.path, self.fsync_seconds, self._clock = path, fsync_seconds, clock
        self._file = open(path, "a")  # noqa: SIM115 -- kept open for the whole run
        self._last_fsync = clock()
        self._fsync_due = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        if fsync_seconds > 0:
            self._thread = threading.Thread(target=self._fsync_loop, name="metrics-fsync")
            self._thread.daemon = True  # a killed run does not wait for it
            self._thread.start()

    def _fsync(self) -> None:
        """fsyncs the file; a failure is logged (the rows stay in the OS's cache)."""
        try:
            os.fsync(self._file.fileno())
        except OSError as e:
            logger.warning("%s: fsync failed (%s); rows stay in the OS's cache", self.path, e)

    def _fsync_loop(self) -> None:
        """Background thread: one fsync each time :meth:`write_rows` marks one as due."""
        while True:
            self._fsync_due.wait()
            self._fsync_due.clear()
            if self._stopping:
                return
            self._fsync()

    def write_rows(self, rows: dict[int, dict[str, float]]) -> None:
        """Writes one line per iteration (in order) and flushes; fsyncs as described above."""
        for iteration in sorted(rows):
            row = {**rows[iteration], "iteration": iteration}
            self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        if self._thread is None:
            self._fsync()
            return
        now = self._clock()
        if now - self._last_fsync >= self.fsync_seconds:
            self._last_fsync = now
            self._fsync_due.set()

    def close(self) -> None:
        """Stops the background thread, fsyncs every row written and closes the file.

        Idempotent: a second call does nothing.
        """
        if self._file.closed:
            return
        if self._thread is not None:
            self._stopping = True
            self._fsync_due.set()
            self._thread.join()
            self._thread = None
        self._file.flush()
        self._fsync()
        self._file.close()


def _keep(line: str, start_iteration: int) -> bool:
    """Whether a log line is a complete row of an iteration before ``start_iteration``."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return False  # a line cut by a kill
    iteration = row.get("iteration") if isinstance(row, dict) else None
    return isinstance(iteration, int) and iteration < start_iteration


def drop_rows_from(path: str, start_iteration: int) -> int:
    """Rewrites ``path`` (atomically) without rows of iterations ``>= start_iteration``.

    Args:
        path: the ``metrics.json`` file (nothing happens when it does not exist).
        start_iteration: the first iteration the resumed run will log.

    Returns:
        The number of lines removed (rows of later iterations and unreadable lines).
    """
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    kept = [line for line in lines if _keep(line, start_iteration)]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)
