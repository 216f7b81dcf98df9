"""Training hooks of ChimeraSeg: ``metrics.json`` written after every iteration."""

from __future__ import annotations

import logging

from detectron2.engine import HookBase
from detectron2.utils.events import get_event_storage

from chimeraseg.utils.metrics_log import DEFAULT_FSYNC_SECONDS, MetricsLog, drop_rows_from

logger = logging.getLogger(__name__)


class PerIterationJSONWriter(HookBase):
    """Writes ``metrics.json`` after every iteration (detectron2 writes it every 20 iterations).

    Each row is flushed to the operating system at once, so a killed process loses at most the
    running iteration's row; the fsync to disk happens off the training step, at most once per
    ``fsync_seconds`` (:class:`~chimeraseg.utils.metrics_log.MetricsLog`), and :meth:`close`
    (called by ``after_train``, and by whoever ends a run early) syncs the rest.

    Rows hold the scalars of the ``EventStorage`` not written yet (smoothed as detectron2's
    ``JSONWriter`` does); the final evaluation's metrics get their own row. Before a resumed run
    (``start_iter > 0``) the rows of iterations ``>= start_iter`` left by the killed run are
    removed, so the curves hold every iteration once.

    Args:
        path: the ``metrics.json`` file.
        window_size: median window of scalars with a smoothing hint.
        fsync_seconds: at most one fsync per this many seconds, from a background thread
            (``METRICS_FSYNC_SECONDS``); 0 = fsync every row on the training thread.
    """

    def __init__(
        self, path: str, window_size: int = 20, fsync_seconds: float = DEFAULT_FSYNC_SECONDS
    ) -> None:
        self._path, self._window_size = path, window_size
        self._fsync_seconds = fsync_seconds
        self._log: MetricsLog | None = None
        self._written: dict[str, int] = {}  # scalar name -> last iteration written

    def before_train(self) -> None:
        """Drops the rows a killed run left from ``start_iter`` on; opens the log."""
        if self.trainer.start_iter > 0:
            dropped = drop_rows_from(self._path, self.trainer.start_iter)
            if dropped:
                logger.info(
                    "%s: removed %d rows from iteration %d on (to be re-run)",
                    self._path, dropped, self.trainer.start_iter,
                )  # fmt: skip
        self._log = MetricsLog(self._path, fsync_seconds=self._fsync_seconds)

    def _write(self) -> None:
        """Appends the scalars updated since the last write, one row per iteration."""
        try:
            storage = get_event_storage()
        except AssertionError:  # closed outside the training loop: no storage, nothing new
            return
        rows: dict[int, dict[str, float]] = {}
        latest = storage.latest_with_smoothing_hint(self._window_size)
        for name, (value, iteration) in latest.items():
            if self._written.get(name, -1) < iteration:
                rows.setdefault(iteration, {})[name] = value
                self._written[name] = iteration
        if rows:
            self._log.write_rows(rows)

    def after_step(self) -> None:
        """Writes the iteration's row."""
        self._write()

    def after_train(self) -> None:
        """Writes the final evaluation's row and closes the log."""
        self.close()

    def close(self) -> None:
        """Writes the rows not written yet, fsyncs and closes the log (idempotent).

        Safe to call when a run ends early (preemption, an error): every row of the finished
        iterations is then on disk.
        """
        if self._log is None:
            return
        try:
            self._write()  # the final evaluation's metrics (or nothing new)
        finally:
            self._log.close()
            self._log = None
