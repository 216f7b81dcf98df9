"""Preemption: SIGTERM mid-run -> checkpoint of that iteration, exit 143 -> --resume equals a run
never interrupted, bit for bit (CPU, one thread; one process and two gloo processes)."""

from __future__ import annotations

import signal

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import training_runs as tr  # noqa: E402

from chimeraseg.d2.cluster_config import EXIT_PREEMPTED  # noqa: E402

MAX_ITER = 12
SIGNAL_AFTER = 3  # iteration logged before the signal is sent


@pytest.mark.slow
@pytest.mark.parametrize(("num_gpus", "workers"), [(1, 0), (2, 2)])
def test_sigterm_checkpoints_exits_143_and_resume_equals_uninterrupted(
    num_gpus, workers, tiny_opts, synthetic_root, tmp_path, tmp_path_factory
):
    # The stream does not depend on the loader workers (docs/CLUSTER.md), so one reference per
    # world size (shared with the launcher tests) serves both settings.
    reference = tr.reference_run(
        tmp_path_factory, tiny_opts, synthetic_root, num_gpus=num_gpus, workers=0, max_iter=MAX_ITER
    )
    out, env = tmp_path / "run", tr.child_env(synthetic_root)
    opts = tr.run_opts(tiny_opts, out, MAX_ITER, "DATALOADER.NUM_WORKERS", str(workers))
    log = tmp_path / "run.log"
    process = tr.start(tr.python_train_net(tr.train_net_argv(opts, num_gpus=num_gpus)), env, log)
    tr.wait_for_iteration(out, SIGNAL_AFTER, process)
    process.send_signal(signal.SIGTERM)  # the launcher forwards it to its training processes
    assert process.wait(timeout=tr.RUN_TIMEOUT_S) == EXIT_PREEMPTED, log.read_text()[-3000:]

    # The checkpoint of the iteration the ranks agreed on is the one to resume from.
    stopped_at = max(tr.logged_iterations(out))
    assert SIGNAL_AFTER <= stopped_at < MAX_ITER - 1
    assert tr.last_checkpoint(out) == f"model_{stopped_at:07d}.pth"
    assert not (out / "model_final.pth").exists()
    text = log.read_text()
    assert f"preempted after iteration {stopped_at}" in text
    # metrics.json ended cleanly: every row parses, each iteration once.
    assert tr.logged_iterations(out) == list(range(stopped_at + 1))

    resumed = tr.run(
        tr.python_train_net(tr.train_net_argv(opts, num_gpus=num_gpus, resume=True)), env, log
    )
    assert resumed == 0, log.read_text()[-3000:]
    assert tr.logged_iterations(out) == list(range(MAX_ITER))
    tr.assert_same_final_model(reference, out)
