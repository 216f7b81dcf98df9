"""Training runs of tools/train_net.py in child processes, for the resume and cluster tests.

The interruption tests (SIGKILL, preemption signals, torchrun restarts, submitit requeues) all do
the same: train a few iterations with the tiny config in a child process (1 thread, so results are
bitwise reproducible), interrupt it, resume, and compare ``model_final.pth`` with a run never
interrupted. This module holds those steps once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from chimeraseg_test_utils import REPO, SYNTHETIC_CONFIG

TRAIN_NET = str(REPO / "tools" / "train_net.py")
# Seconds a child training run may take before the test gives up on it.
RUN_TIMEOUT_S = 600


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(datasets_root: str) -> dict[str, str]:
    """The environment of a child run: one thread (bitwise reproducible), the synthetic data."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DETECTRON2_DATASETS=datasets_root,
        PYTHONUNBUFFERED="1",
    )  # fmt: skip
    return env


def run_opts(tiny_opts: list[str], out_dir: Path, max_iter: int, *extra: str) -> list[str]:
    """``KEY VALUE`` overrides of a tiny run of ``max_iter`` iterations into ``out_dir``."""
    return [
        *tiny_opts,
        "OUTPUT_DIR", str(out_dir),
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "TEST.EVAL_PERIOD", "0",
        "DATASETS.TEST", "()",  # no evaluation: the tests compare the weights
        "SEED", "0",
        "SOLVER.WARMUP_ITERS", "0",  # the weights move from the first iteration on
        "SOLVER.BASE_LR", "1e-3",
        *extra,
    ]  # fmt: skip


def train_net_argv(opts: list[str], *, num_gpus: int = 1, resume: bool = False) -> list[str]:
    """The arguments of tools/train_net.py after the script name."""
    argv = ["--config-file", SYNTHETIC_CONFIG, "--num-gpus", str(num_gpus)]
    if num_gpus > 1:
        argv += ["--dist-url", f"tcp://127.0.0.1:{free_port()}"]
    return [*argv, *(["--resume"] if resume else []), *opts]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Starts ``command`` with stdout and stderr into ``log`` (appended)."""
    handle = log.open("ab")
    return subprocess.Popen(
        command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=str(REPO)
    )


def run(command: list[str], env: dict[str, str], log: Path) -> int:
    """Runs ``command`` to its end; returns its exit status."""
    return start(command, env, log).wait(timeout=RUN_TIMEOUT_S)


def python_train_net(argv: list[str]) -> list[str]:
    """``python tools/train_net.py ARGV``."""
    return [sys.executable, TRAIN_NET, *argv]


def logged_iterations(out_dir: Path) -> list[int]:
    """Iterations with a training row in ``out_dir/metrics.json`` (empty when none yet)."""
    path = out_dir / "metrics.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a row being written
            continue
    return [int(r["iteration"]) for r in rows if "iteration" in r and "total_loss" in r]


def wait_for_iteration(out_dir: Path, iteration: int, process: subprocess.Popen) -> None:
    """Waits until ``metrics.json`` logs ``iteration`` (fails if the process ended first)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while max(logged_iterations(out_dir), default=-1) < iteration:
        assert process.poll() is None, f"the run ended (status {process.returncode}) too early"
        assert time.monotonic() < deadline, f"iteration {iteration} never logged in {out_dir}"
        time.sleep(0.02)


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    """The model weights of ``out_dir/model_final.pth``."""
    return torch.load(out_dir / "model_final.pth", map_location="cpu", weights_only=True)["model"]


def assert_same_final_model(reference: Path, other: Path) -> None:
    """``model_final.pth`` of both runs holds the same weights, bit for bit."""
    a, b = final_weights(reference), final_weights(other)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, (
        f"{len(different)} tensors differ from the uninterrupted run: {different[:5]}"
    )


_REFERENCES: dict[tuple[int, int, int], Path] = {}


def reference_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_opts: list[str],
    datasets_root: str,
    *,
    num_gpus: int,
    workers: int,
    max_iter: int,
) -> Path:
    """The output folder of a run never interrupted (run once per session and setting)."""
    key = (num_gpus, workers, max_iter)
    if key not in _REFERENCES:
        out = tmp_path_factory.mktemp(f"reference_{num_gpus}gpus_{workers}workers_{max_iter}")
        opts = run_opts(tiny_opts, out, max_iter, "DATALOADER.NUM_WORKERS", str(workers))
        status = run(python_train_net(train_net_argv(opts, num_gpus=num_gpus)),
                     child_env(datasets_root), out / "run.log")  # fmt: skip
        assert status == 0, (out / "run.log").read_text()[-3000:]
        _REFERENCES[key] = out
    return _REFERENCES[key]


def last_checkpoint(out_dir: Path) -> str:
    """The file named by ``out_dir/last_checkpoint``."""
    return (out_dir / "last_checkpoint").read_text().strip()
