"""metrics.json off the critical path: a row per write, bounded fsyncs, complete on close."""

from __future__ import annotations

import json
import os

import pytest

from chimeraseg.utils import metrics_log
from chimeraseg.utils.metrics_log import MetricsLog


class _Clock:
    """A fake monotonic clock moved by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fsyncs(monkeypatch) -> list[int]:
    """Records the file size at every ``os.fsync`` of the log (what reached the disk)."""
    sizes: list[int] = []
    monkeypatch.setattr(metrics_log.os, "fsync", lambda fd: sizes.append(os.fstat(fd).st_size))
    return sizes


def _iterations(path) -> list[int]:
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


def test_every_row_is_in_the_file_right_after_its_write(tmp_path, fsyncs) -> None:
    path = tmp_path / "metrics.json"
    log = MetricsLog(str(path), fsync_seconds=10.0, clock=_Clock())
    for i in range(25):
        log.write_rows({i: {"total_loss": 1.0 / (i + 1)}})
        assert _iterations(path) == list(range(i + 1))  # flushed: a killed process keeps it
    log.close()
    assert _iterations(path) == list(range(25))


def test_fsyncs_are_bounded_by_the_period_and_close_syncs_everything(tmp_path, fsyncs) -> None:
    path, clock = tmp_path / "metrics.json", _Clock()
    log = MetricsLog(str(path), fsync_seconds=10.0, clock=clock)
    for i in range(100):  # 100 iterations of 1 s: at most one fsync per 10 s
        clock.now += 1.0
        log.write_rows({i: {"loss": float(i)}})
    log.close()
    assert 1 <= len(fsyncs) <= 100 // 10 + 1
    assert fsyncs[-1] == path.stat().st_size  # the last fsync saw every row
    assert _iterations(path) == list(range(100))


def test_no_time_passed_means_only_the_closing_fsync(tmp_path, fsyncs) -> None:
    log = MetricsLog(str(tmp_path / "metrics.json"), fsync_seconds=10.0, clock=_Clock())
    for i in range(50):
        log.write_rows({i: {"loss": 0.0}})
    log.close()
    log.close()  # idempotent
    assert len(fsyncs) == 1


def test_period_zero_fsyncs_every_write_on_the_caller(tmp_path, fsyncs) -> None:
    log = MetricsLog(str(tmp_path / "metrics.json"), fsync_seconds=0)
    for i in range(5):
        log.write_rows({i: {"loss": 0.0}})
        assert len(fsyncs) == i + 1
    log.close()
    assert len(fsyncs) == 6


def test_a_failing_fsync_keeps_the_rows(tmp_path, monkeypatch, caplog) -> None:
    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(metrics_log.os, "fsync", failing)
    path = tmp_path / "metrics.json"
    log = MetricsLog(str(path), fsync_seconds=0)
    log.write_rows({0: {"loss": 1.0}})
    log.close()
    assert _iterations(path) == [0]
    assert "fsync failed" in caplog.text


def test_negative_period_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="fsync_seconds"):
        MetricsLog(str(tmp_path / "metrics.json"), fsync_seconds=-1)
