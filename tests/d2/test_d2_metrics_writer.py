"""PerIterationJSONWriter: a row every iteration, fsync off the step, complete after close."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from detectron2.utils.events import EventStorage  # noqa: E402

from chimeraseg.d2.hooks import PerIterationJSONWriter  # noqa: E402
from chimeraseg.utils import metrics_log  # noqa: E402

pytestmark = pytest.mark.detectron2


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _writer(path, fsync_seconds: float = 3600.0) -> PerIterationJSONWriter:
    writer = PerIterationJSONWriter(str(path), fsync_seconds=fsync_seconds)
    writer.trainer = SimpleNamespace(start_iter=0)
    writer.before_train()
    return writer


def test_rows_every_iteration_one_fsync_and_a_complete_file(tmp_path, monkeypatch) -> None:
    fsyncs = []
    monkeypatch.setattr(metrics_log.os, "fsync", fsyncs.append)
    path = tmp_path / "metrics.json"
    writer = _writer(path)
    with EventStorage(0) as storage:
        for it in range(30):
            storage.iter = it
            storage.put_scalar("total_loss", 1.0 / (it + 1), smoothing_hint=False)
            writer.after_step()
            assert [r["iteration"] for r in _rows(path)] == list(range(it + 1))
        assert fsyncs == []  # none on the training thread within the period
        storage.put_scalar("hIoU", 42.0, smoothing_hint=False)  # the final evaluation
        writer.after_train()
    rows = _rows(path)
    assert len(rows) == 31 and rows[-1] == {"iteration": 29, "hIoU": 42.0}  # its own row
    assert len(fsyncs) == 1  # the closing fsync
    writer.close()  # a second close (e.g. after a preemption) does nothing
    assert len(fsyncs) == 1


def test_close_outside_the_training_loop_keeps_the_rows(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    writer = _writer(path)
    with EventStorage(0) as storage:
        storage.put_scalar("total_loss", 0.5, smoothing_hint=False)
        writer.after_step()
    writer.close()  # no EventStorage open any more: nothing new, the file is closed
    assert _rows(path) == [{"iteration": 0, "total_loss": 0.5}]
    assert writer._log is None
