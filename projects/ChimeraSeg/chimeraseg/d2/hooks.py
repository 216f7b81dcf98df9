"""Training hooks of ChimeraSeg: ``metrics.json`` written after every iteration."""

from __future__ import annotations

import logging

from detectron2.engine import HookBase
from detectron2.utils.events import get_event_storage

from chimeraseg.utils.metrics_log import MetricsLog, drop_rows_from

logger = logging.getLogger(__name__)


class PerIterationJSONWriter(HookBase):
    """Writes ``metrics.json`` after every iteration, flushed and fsync-ed, so a kill loses at
    most the running iteration's row (detectron2 writes it every 20 iterations).

    Rows hold the scalars of the ``EventStorage`` not written yet (smoothed as detectron2's
    ``JSONWriter`` does); the final evaluation's metrics get their own row. Before a resumed run
    (``start_iter > 0``) the rows of iterations ``>= start_iter`` left by the killed run are
    removed, so the curves hold every iteration once.

    Args:
        path: the ``metrics.json`` file.
        window_size: median window of scalars with a smoothing hint.
    """

    def __init__(self, path: str, window_size: int = 20) -> None:
        self._path, self._window_size = path, window_size
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
        self._log = MetricsLog(self._path)

    def _write(self) -> None:
        """Appends the scalars updated since the last write, one row per iteration."""
        rows: dict[int, dict[str, float]] = {}
        latest = get_event_storage().latest_with_smoothing_hint(self._window_size)
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
        if self._log is not None:
            self._write()  # the final evaluation's metrics
            self._log.close()
            self._log = None
