"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed ends bit for bit equal.

tools/train_net.py runs in a subprocess (tests/d2/resume_run.py: one thread per process), one
process and two (gloo), ``DATALOADER.NUM_WORKERS`` 0 and 2. The killed run stops at a known point
(rank 0 waits after an iteration, the test kills the whole process group); ``--resume`` then
continues from the last checkpoint with its training-state files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, REPO, SYNTHETIC_CONFIG

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402

HELPER = str(Path(__file__).with_name("resume_run.py"))
MAX_ITER, PERIOD = 6, 2  # checkpoints after iterations 1, 3 and 5 (model_final)
RUN_TIMEOUT = 300  # seconds a run may take on a busy CI machine


def _command(opts: list[str], root: str, world: int, freeze: int | None, marker: Path) -> list[str]:
    own = ["--datasets-root", root]
    if freeze is not None:
        own += ["--freeze-after", str(freeze), "--marker", str(marker)]
    train = ["--config-file", SYNTHETIC_CONFIG, "--num-gpus", str(world), *opts]
    return [sys.executable, HELPER, *own, "--", *train]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train(opts: list[str], root: str, world: int, log: Path) -> None:
    """One run to the end; fails the test with the log's tail when it does not finish."""
    with log.open("w") as out:
        done = subprocess.run(
            _command(opts, root, world, None, log), stdout=out, stderr=subprocess.STDOUT,
            env=_env(), cwd=REPO, timeout=RUN_TIMEOUT, check=False,
        )  # fmt: skip
    assert done.returncode == 0, log.read_text()[-3000:]


def _train_and_kill(opts: list[str], root: str, world: int, after: int, log: Path) -> None:
    """A run that rank 0 holds after iteration ``after``; then SIGKILL to its process group."""
    marker = log.with_suffix(".frozen")
    with log.open("w") as out:
        proc = subprocess.Popen(
            _command(opts, root, world, after, marker), stdout=out, stderr=subprocess.STDOUT,
            env=_env(), cwd=REPO, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):  # gone already: the log says why
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher, every rank, loader workers
            proc.wait()
    assert marker.exists(), log.read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


# (processes, workers of the killed run, iteration after which it is killed, workers on resume):
# killed right after the checkpoint of iteration 3, or mid-interval (iteration 2 is lost and
# redone from the checkpoint of iteration 1); each resume changes the worker count, which the
# stream does not depend on, so both counts are covered in both worlds.
CASES = [(1, 0, 3, 2), (2, 2, 2, 0)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("world", "workers", "kill_after", "resume_workers"),
    CASES,
    ids=["1-process-workers-0-then-2", "2-processes-gloo-workers-2-then-0"],
)
def test_sigkill_then_resume_equals_the_uninterrupted_run(
    world, workers, kill_after, resume_workers, tiny_opts, synthetic_root, tmp_path
) -> None:
    base = [*tiny_opts, "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD",
            str(PERIOD), "SEED", "0", "TEST.EVAL_PERIOD", "0"]  # fmt: skip

    def opts(name: str, num_workers: int) -> list[str]:
        return [*base, "OUTPUT_DIR", str(tmp_path / name), "DATALOADER.NUM_WORKERS",
                str(num_workers)]  # fmt: skip

    _train(opts("reference", workers), synthetic_root, world, tmp_path / "reference.log")
    reference = _final_weights(tmp_path / "reference")

    out = tmp_path / "killed"
    _train_and_kill(opts("killed", workers), synthetic_root, world, kill_after, tmp_path / "k.log")
    assert not (out / "model_final.pth").exists()
    checkpoint = f"model_{kill_after - (kill_after + 1) % PERIOD:07d}"  # the last one written
    assert (out / "last_checkpoint").read_text() == f"{checkpoint}.pth"
    states = sorted(p.name for p in out.glob(f"{checkpoint}.rank*.state"))
    assert states == [f"{checkpoint}.rank{r}.state" for r in range(world)]

    log = tmp_path / "resumed.log"
    _train(["--resume", *opts("killed", resume_workers)], synthetic_root, world, log)
    assert f"Loading from {out / checkpoint}.pth" in log.read_text()
    _assert_bitwise_equal(_final_weights(out), reference)
