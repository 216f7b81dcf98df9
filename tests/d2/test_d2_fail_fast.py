"""Fail fast: a rank that raises stops every other rank within CLUSTER.FAIL_FAST_S, each logging
the first rank's error (the watchdog on a real TCPStore; two gloo training processes with a fault
planted on rank 1)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
import training_runs as tr  # noqa: E402

from chimeraseg.d2.cluster_config import EXIT_PEER_FAILED  # noqa: E402
from chimeraseg.d2.failfast import ERROR_KEY, FailFastWatchdog  # noqa: E402

FAULT_ITERATION = 2
FAULT_TEXT = "planted fault on rank 1"


def _store() -> torch.distributed.TCPStore:
    """A TCPStore on the loopback interface (both watchdogs of a test share it)."""
    return torch.distributed.TCPStore(
        "127.0.0.1", tr.free_port(), is_master=True, timeout=timedelta(seconds=30),
        wait_for_workers=False,
    )  # fmt: skip


def test_watchdog_stops_a_peer_with_the_failing_ranks_error(caplog):
    store = _store()
    exited = threading.Event()
    codes: list[int] = []

    def record_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    peer = FailFastWatchdog(fail_fast_s=2.0, exit_now=record_exit)
    failing = FailFastWatchdog(fail_fast_s=2.0, exit_now=lambda code: pytest.fail("own error"))
    peer.start(store=store, rank=0, world_size=2)
    failing.start(store=store, rank=1, world_size=2)
    with caplog.at_level(logging.ERROR, logger="chimeraseg.d2.failfast"):
        failing.report(RuntimeError(FAULT_TEXT))  # returns once the peer acknowledged
        assert exited.wait(10)
    assert codes == [EXIT_PEER_FAILED]
    assert f"rank 1 raised RuntimeError: {FAULT_TEXT}; rank 0 stops" in caplog.text
    peer.stop()


def test_watchdog_is_silent_when_no_rank_fails():
    store = _store()
    watchdog = FailFastWatchdog(fail_fast_s=0.2, exit_now=lambda code: pytest.fail("exited"))
    watchdog.start(store=store, rank=0, world_size=2)
    threading.Event().wait(0.5)  # several polls find nothing
    watchdog.stop()
    assert not store.check([ERROR_KEY])


def _faulty_rank_main(args: Any, datasets_root: str) -> None:
    """train_net's ``main`` with a fault planted on rank 1 at :data:`FAULT_ITERATION`."""
    from detectron2.engine import HookBase
    from detectron2.utils import comm

    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs

    register_all_synthetic_zs(datasets_root, replace=True)
    tn = load_script("tools/train_net.py", "chimeraseg_train_net")

    class Fault(HookBase):
        def before_step(self) -> None:
            if comm.get_rank() == 1 and self.trainer.iter == FAULT_ITERATION:
                raise RuntimeError(FAULT_TEXT)

    class FaultyTrainer(tn.ChimeraSegTrainer):
        def build_hooks(self) -> list[HookBase]:
            return [Fault(), *super().build_hooks()]

    tn.ChimeraSegTrainer = FaultyTrainer
    tn.main(args)


def _planted(args: Any) -> None:
    """Module-level (picklable for the spawned processes) entry with the planted fault."""
    _faulty_rank_main(args, args.datasets_root)


@pytest.mark.slow
def test_rank_1_raises_and_rank_0_stops_with_its_error(tiny_opts, synthetic_root, tmp_path):
    from detectron2.engine import default_argument_parser

    from chimeraseg.d2.launch import launch_training

    out = tmp_path / "run"
    opts = tr.run_opts(
        tiny_opts, out, 20,
        "CLUSTER.FAIL_FAST_S", "5.0",
        "CLUSTER.COLLECTIVE_TIMEOUT_S", "600.0",  # without fail fast rank 0 would wait this long
    )  # fmt: skip
    argv = ["--config-file", SYNTHETIC_CONFIG, "--num-gpus", "2",
            "--dist-url", f"tcp://127.0.0.1:{tr.free_port()}", *opts]  # fmt: skip
    args = default_argument_parser().parse_args(argv)
    args.datasets_root = synthetic_root
    with pytest.raises((SystemExit, torch.multiprocessing.ProcessRaisedException)) as raised:
        launch_training(_planted, args)
    if isinstance(raised.value, SystemExit):  # rank 0 stopped first, as fail fast makes it
        assert raised.value.code == EXIT_PEER_FAILED
    else:
        assert FAULT_TEXT in str(raised.value)

    rank0, rank1 = (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()
    assert f"fail fast: rank 1 raised RuntimeError: {FAULT_TEXT}; rank 0 stops" in rank0
    assert FAULT_TEXT in rank1 and "Traceback" in rank1
    # Rank 0 never finished the iteration rank 1 failed in.
    assert max(tr.logged_iterations(out)) < FAULT_ITERATION
