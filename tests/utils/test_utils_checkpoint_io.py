"""Checkpoint files: refused pickles, honest errors, atomic writes, a durable metrics log."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from chimeraseg.utils.checkpoint_io import (
    CheckpointError,
    atomic_open,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint_file,
    resume_candidates,
)
from chimeraseg.utils.metrics_log import MetricsLog, drop_rows_from


class _Planter:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------ item 1: pickles refused
def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path) -> None:
    marker, path = tmp_path / "planted", tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": _Planter(marker)}))
    with pytest.raises(CheckpointError, match=r"refusing to load '.*model_final\.pkl'"):
        load_checkpoint_file(path)
    assert not marker.exists()


# ---------------------------------------------------------------- item 12: honest load errors
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        # Seeded random bytes: seed 0 fails as a pickle; 17, 54 and 62 deeper in torch's legacy
        # reader (IndexError, UnicodeDecodeError, KeyError).
        *[
            (np.random.default_rng(s).bytes(2048), "neither a torch.save archive")
            for s in (0, 17, 54, 62)
        ],
        (b"", "empty, truncated"),
        ("truncated", "empty, truncated"),
        ("planted", "Python objects other than tensors"),
    ],
)
def test_files_that_are_not_checkpoints_are_named_without_unsafe_advice(
    tmp_path, content, reason
) -> None:
    path = tmp_path / "weights.pth"
    if content == "truncated":
        torch.save({"model": {"w": torch.ones(64)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "planted":
        torch.save({"model": _Planter(tmp_path / "planted")}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"'{path}' is not a checkpoint: it") as info:
        load_checkpoint_file(path)
    assert reason in str(info.value)
    assert "weights_only" not in str(info.value) and info.value.__cause__ is None
    assert not (tmp_path / "planted").exists()


# --------------------------------------------------------------- item 10: atomic checkpoints
_DYING_WRITER = textwrap.dedent(
    """
    import os, sys, torch
    from chimeraseg.utils import checkpoint_io

    real_save = torch.save

    def dies_half_way(obj, f):  # writes half of the archive, then the process is killed
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os._exit(9)

    checkpoint_io.torch.save = dies_half_way
    checkpoint_io.atomic_torch_save({"model": {"w": torch.full((256,), 2.0)}}, sys.argv[1])
    """
)


def test_a_writer_killed_half_way_leaves_the_previous_checkpoint(tmp_path) -> None:
    path = tmp_path / "model_final.pth"
    atomic_torch_save({"model": {"w": torch.ones(256)}, "iteration": 7}, path)
    run = subprocess.run([sys.executable, "-c", _DYING_WRITER, str(path)], check=False)
    assert run.returncode == 9
    loaded = load_checkpoint_file(path)  # the previous, complete checkpoint
    assert loaded["iteration"] == 7 and torch.equal(loaded["model"]["w"], torch.ones(256))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model_final.pth"]
    assert all(n.startswith(".model_final.pth.") and n.endswith(".tmp") for n in leftovers)
    assert resume_candidates(str(tmp_path), str(path)) == [str(path)]  # temp files ignored


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary_file(tmp_path, mode) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_text(path, '{"old": 1}')
    with pytest.raises(KeyError, match="writer failed"), atomic_open(path, mode) as f:
        f.write(b"partial" if mode == "wb" else "partial")
        raise KeyError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert path.read_text() == '{"old": 1}'
    with atomic_open(path, mode) as f:  # a writer that succeeds replaces it, nothing left over
        f.write(b"new" if mode == "wb" else "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert path.read_text() == "new"


def test_a_writer_that_raises_before_any_file_existed_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="boom"), atomic_open(tmp_path / "a" / "b.pth") as f:
        f.write(b"x")
        raise RuntimeError("boom")
    assert list((tmp_path / "a").iterdir()) == []


def test_resume_candidates_are_newest_first(tmp_path) -> None:
    for i, name in enumerate(["model_0000001.pth", "model_0000003.pth", "model_final.pth"]):
        atomic_torch_save({"i": i}, tmp_path / name)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    latest = str(tmp_path / "model_final.pth")
    assert [Path(p).name for p in resume_candidates(str(tmp_path), latest)] == [
        "model_final.pth", "model_0000003.pth", "model_0000001.pth"
    ]  # fmt: skip


# ------------------------------------------------------------------ item 11: durable metrics
_KILLED_LOGGER = textwrap.dedent(
    """
    import os, sys
    from chimeraseg.utils.metrics_log import MetricsLog

    log = MetricsLog(sys.argv[1])
    for i in range(5):
        log.write_rows({i: {"total_loss": 1.0 / (i + 1)}})
    os._exit(9)  # killed: no close(), no interpreter shutdown
    """
)


def test_metrics_rows_survive_a_kill(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    run = subprocess.run([sys.executable, "-c", _KILLED_LOGGER, str(path)], check=False)
    assert run.returncode == 9
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4]


def test_rows_after_the_resumed_checkpoint_are_dropped(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    log = MetricsLog(str(path))
    log.write_rows({i: {"loss": float(i)} for i in range(5)})
    log.close()
    with open(path, "a") as f:
        f.write('{"iteration": 5, "lo')  # cut by a kill
    assert drop_rows_from(str(path), 3) == 3
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [0, 1, 2]
    assert drop_rows_from(str(tmp_path / "absent.json"), 3) == 0
