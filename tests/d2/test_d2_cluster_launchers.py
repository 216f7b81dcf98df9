"""torchrun and submitit: two CPU processes form one world; a worker killed under torchrun is
restarted and resumes, a submitit job signalled before its time limit is requeued and resumes;
both end with the weights of a run never interrupted, bit for bit."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import training_runs as tr  # noqa: E402

MAX_ITER = 12
WORLD = 2


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _rank_of(pid: int) -> int | None:
    """The ``RANK`` (torchrun) or ``SUBMITIT_LOCAL_GLOBALID`` of a process, if it has one."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        key, _, value = entry.decode(errors="replace").partition("=")
        if key in ("RANK", "SUBMITIT_LOCAL_GLOBALID"):
            return int(value)
    return None


def _worker_pids(parent: int) -> dict[int, int]:
    """``{rank: pid}`` of the training processes under ``parent``, once all have started."""
    deadline = time.monotonic() + tr.RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        ranks = {_rank_of(pid): pid for pid in _children(parent)}
        ranks.pop(None, None)
        if len(ranks) == WORLD:
            return ranks
        time.sleep(0.1)
    raise AssertionError(f"the {WORLD} training processes of {parent} never started")


@pytest.mark.slow
def test_torchrun_two_processes_one_world_and_a_killed_worker_resumes(
    tiny_opts, synthetic_root, tmp_path, tmp_path_factory
):
    reference = tr.reference_run(
        tmp_path_factory, tiny_opts, synthetic_root, num_gpus=WORLD, workers=0, max_iter=MAX_ITER
    )
    out, log = tmp_path / "run", tmp_path / "torchrun.log"
    opts = tr.run_opts(tiny_opts, out, MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", "2",
                       "CLUSTER.FAIL_FAST_S", "5.0")  # fmt: skip
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
        "--max-restarts", "1", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{tr.free_port()}",
        tr.TRAIN_NET, "--config-file", SYNTHETIC_CONFIG, *opts,
    ]  # fmt: skip
    agent = tr.start(command, tr.child_env(synthetic_root), log)
    tr.wait_for_iteration(out, 4, agent)  # model_0000001.pth and model_0000003.pth exist
    os.kill(_worker_pids(agent.pid)[1], signal.SIGKILL)
    assert agent.wait(timeout=tr.RUN_TIMEOUT_S) == 0, log.read_text()[-3000:]

    rank0 = (out / "log.txt").read_text()
    assert "World size: 2" in rank0 and (out / "log.txt.rank1").is_file()  # one world of 2
    assert "torchrun restart 1: resuming from the last checkpoint" in log.read_text()
    assert "Starting training from iteration 0" in rank0
    resumed_at = [int(line.rsplit(" ", 1)[1]) for line in rank0.splitlines()
                  if "Starting training from iteration" in line][-1]  # fmt: skip
    assert resumed_at >= 2 and resumed_at % 2 == 0  # after a periodic checkpoint
    assert tr.logged_iterations(out)[-1] == MAX_ITER - 1
    tr.assert_same_final_model(reference, out)


@pytest.mark.slow
def test_submitit_local_job_signalled_before_its_time_limit_is_requeued_and_resumes(
    tiny_opts, synthetic_root, tmp_path, tmp_path_factory, monkeypatch
):
    import submitit

    reference = tr.reference_run(
        tmp_path_factory, tiny_opts, synthetic_root, num_gpus=WORLD, workers=0, max_iter=MAX_ITER
    )
    for key, value in tr.child_env(synthetic_root).items():
        monkeypatch.setenv(key, value)  # the executor's tasks inherit this environment
    out, folder = tmp_path / "run", tmp_path / "submitit"
    submit_slurm = load_script("tools/submit_slurm.py", "chimeraseg_submit_slurm")
    job = submit_slurm.submit([
        "--cluster", "local", "--gpus-per-node", str(WORLD), "--time", "30",
        "--master-port", str(tr.free_port()), "--output", str(folder),
        "--config-file", SYNTHETIC_CONFIG, *tr.run_opts(tiny_opts, out, MAX_ITER),
    ])  # fmt: skip
    controller = job._process
    tr.wait_for_iteration(out, 3, controller)
    # What the executor's controller sends to every task signal_delay_s before timeout_min.
    usr_signal = submitit.JobEnvironment._usr_sig()
    for pid in _worker_pids(controller.pid).values():
        os.kill(pid, usr_signal)
    job.results()  # waits for the requeued tasks; raises if one failed
    assert controller.returncode == 0

    stdout = "".join(p.read_text() for p in folder.glob("*_0_log.out"))
    assert "requeuing the job" in stdout and "Requeued job" in stdout
    rank0 = (out / "log.txt").read_text()
    assert "World size: 2" in rank0
    stopped_at = int(re.search(r"preempted after iteration (\d+)", rank0).group(1))
    assert f"Starting training from iteration {stopped_at + 1}" in rank0
    assert tr.logged_iterations(out) == list(range(MAX_ITER))
    tr.assert_same_final_model(reference, out)


def test_submit_slurm_turns_the_command_line_into_one_task_per_gpu(tmp_path, monkeypatch):
    submit_slurm = load_script("tools/submit_slurm.py", "chimeraseg_submit_slurm")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun: refused with one line
    args = submit_slurm.get_parser().parse_args(["--config-file", SYNTHETIC_CONFIG])
    with pytest.raises(ValueError, match=r"--cluster slurm: srun is not on PATH"):
        submit_slurm.build_executor(args)
    srun = tmp_path / "srun"  # a login node's srun (submitit only looks it up)
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    args = submit_slurm.get_parser().parse_args([
        "--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu", "--time", "1440",
        "--account", "proj", "--qos", "high", "--job-name", "cs", "--output", str(tmp_path),
        "--sbatch", "constraint=a100", "--sbatch", "mem=400G",
        "--config-file", SYNTHETIC_CONFIG, "SOLVER.MAX_ITER", "10",
    ])  # fmt: skip
    sbatch = submit_slurm.build_executor(args)._make_submission_file_text("python x.py", "uid")
    for line in (
        "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=gpu", "#SBATCH --time=1440", "#SBATCH --account=proj",
        "#SBATCH --qos=high", "#SBATCH --job-name=cs", "#SBATCH --constraint=a100",
        "#SBATCH --mem=400G", "#SBATCH --signal=USR2@120",
    ):  # fmt: skip
        assert line in sbatch, line
    train = submit_slurm.train_net_args(args)
    assert (train.config_file, train.resume, train.opts) == (
        SYNTHETIC_CONFIG,
        False,
        ["SOLVER.MAX_ITER", "10"],
    )
    with pytest.raises(ValueError, match=r"--sbatch 'mem': expected KEY=VALUE"):
        submit_slurm.parse_sbatch_options(["mem"])


def test_torchrun_environment_is_one_world(monkeypatch):
    from chimeraseg.d2.launch import WorldSpec, torchrun_restart_count, under_torchrun

    for key in ("TORCHELASTIC_RUN_ID", "RANK", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    assert not under_torchrun() and torchrun_restart_count() == 0
    world = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
             "MASTER_ADDR": "node0", "TORCHELASTIC_RESTART_COUNT": "2"}  # fmt: skip
    for key, value in world.items():
        monkeypatch.setenv(key, value)
    assert under_torchrun() and torchrun_restart_count() == 2
    assert WorldSpec.from_torchrun_environment() == WorldSpec(3, 8, 1, 2, "env://")
