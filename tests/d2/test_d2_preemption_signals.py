"""Preemption signals without training: the CLUSTER keys, the handlers' first / repeated / second
signal and deadline, and a signal while a checkpoint is written (the previous one stays)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg.d2.cluster_config import (  # noqa: E402
    EXIT_PREEMPTED,
    ClusterSettings,
    parse_signal,
)
from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402
from chimeraseg.d2.preemption import PreemptionSignals, active_preemption_signals  # noqa: E402


def test_cluster_keys_default_and_refuse_bad_values():
    settings = ClusterSettings.from_cfg(get_chimeraseg_cfg())
    assert settings == ClusterSettings()
    assert settings.preempt_signals == (signal.SIGTERM, signal.SIGUSR1)
    assert parse_signal("usr2") == parse_signal("SIGUSR2") == signal.SIGUSR2
    assert parse_signal(str(int(signal.SIGINT))) == signal.SIGINT
    with pytest.raises(ValueError, match=r"CLUSTER.PREEMPT_SIGNALS: 'SIGKILL'"):
        ClusterSettings.from_cfg(
            get_chimeraseg_cfg(opts=["CLUSTER.PREEMPT_SIGNALS", "['SIGKILL']"])
        )
    with pytest.raises(ValueError, match=r"CLUSTER.PREEMPT_SIGNALS: 'SIGNOPE'"):
        parse_signal("SIGNOPE")
    with pytest.raises(ValueError, match=r"CLUSTER.FAIL_FAST_S must be > 0, got 0.0"):
        ClusterSettings.from_cfg(get_chimeraseg_cfg(opts=["CLUSTER.FAIL_FAST_S", "0.0"]))


def _signals(deadline_s: float = 60.0) -> tuple[PreemptionSignals, list[int]]:
    exits: list[int] = []
    settings = ClusterSettings(preempt_signals=(signal.SIGUSR1,), preempt_deadline_s=deadline_s)
    return PreemptionSignals(settings, exit_now=exits.append), exits


def test_first_signal_requests_a_repeat_counts_once_a_second_exits():
    signals, exits = _signals()
    previous = signal.getsignal(signal.SIGUSR1)
    signals.install()
    try:
        assert active_preemption_signals() is signals and not signals.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.requested and signals.received == signal.SIGUSR1 and exits == []
        os.kill(os.getpid(), signal.SIGUSR1)  # the same request delivered twice (launcher + us)
        assert exits == []
        signals._first_at -= 2.0  # a signal two seconds after the first is a second request
        os.kill(os.getpid(), signal.SIGUSR1)
        assert exits == [EXIT_PREEMPTED]
    finally:
        signals.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is previous and active_preemption_signals() is None


def test_deadline_exits_without_waiting_unless_uninstalled():
    signals, exits = _signals(deadline_s=0.05)
    signals.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        signals._deadline.join(5)
        assert exits == [EXIT_PREEMPTED]
    finally:
        signals.uninstall()


def test_after_the_checkpoint_further_signals_are_only_logged():
    signals, exits = _signals()
    signals.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        signals.mark_finishing()
        signals._first_at -= 2.0
        os.kill(os.getpid(), signal.SIGUSR1)
        assert exits == []
    finally:
        signals.uninstall()
    assert signals._deadline.finished.is_set()  # uninstall stopped the deadline


# A process writes checkpoint 1, is signalled, and while checkpoint 2 is being written receives a
# second signal: it exits at once (143); checkpoint 1 and last_checkpoint are intact.
_SIGNAL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys, time
    import torch
    from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer
    from chimeraseg.d2.cluster_config import ClusterSettings
    from chimeraseg.d2.preemption import PreemptionSignals

    checkpointer = ChimeraSegCheckpointer(torch.nn.Linear(2, 2), sys.argv[1])
    checkpointer.save("model_0000001", iteration=1)
    PreemptionSignals(ClusterSettings()).install()
    os.kill(os.getpid(), signal.SIGTERM)  # the first signal: checkpoint at the step boundary
    real_save = torch.save

    def slow_save(obj, f, *args, **kwargs):
        f.write(b"the first bytes of a checkpoint")
        time.sleep(1.2)  # later than the repeat window
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal, mid-write
        time.sleep(30)
        real_save(obj, f, *args, **kwargs)

    torch.save = slow_save
    checkpointer.save("model_0000002", iteration=2)
    sys.exit(0)
""")


@pytest.mark.slow
def test_a_second_signal_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path):
    from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer

    result = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_WRITE, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == EXIT_PREEMPTED, result.stderr[-2000:]
    assert "a second signal (SIGTERM) came before the checkpoint" in result.stderr
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()
    import torch

    checkpointer = ChimeraSegCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 1
