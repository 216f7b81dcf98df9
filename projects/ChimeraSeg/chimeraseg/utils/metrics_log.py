"""The ``metrics.json`` training log (one JSON object per line, detectron2's format).

:class:`MetricsLog` appends rows and flushes and fsyncs each write, so a kill loses at most the
row being written. A killed run may leave rows of iterations after its last checkpoint (and a
half-written last line); a run resumed from that checkpoint repeats those iterations.
:func:`drop_rows_from` removes them first, so the log holds every iteration exactly once.
"""

from __future__ import annotations

import json
import os

from chimeraseg.utils.checkpoint_io import atomic_write_text

__all__ = ["MetricsLog", "drop_rows_from"]


class MetricsLog:
    """Appends ``{"iteration": i, <metric>: value, ...}`` rows to a JSON-lines file, durably.

    Args:
        path: the log file (created if missing, appended to otherwise).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "a")  # noqa: SIM115 -- kept open for the whole run

    def write_rows(self, rows: dict[int, dict[str, float]]) -> None:
        """Writes one line per iteration (in order), then flushes and fsyncs."""
        for iteration in sorted(rows):
            row = {**rows[iteration], "iteration": iteration}
            self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
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
