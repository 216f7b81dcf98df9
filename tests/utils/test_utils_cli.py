"""The tools' one entry-point error handler: a refusal is one line and status 2, a bug a
traceback; CHIMERASEG_DEBUG=1 shows the refusal's traceback too."""

from __future__ import annotations

import subprocess
import sys

import pytest
from chimeraseg_test_utils import REPO

from chimeraseg.utils.checkpoint_io import CheckpointError
from chimeraseg.utils.cli import DEBUG_ENV, REFUSAL_STATUS, run_tool
from chimeraseg.utils.output_files import OutputError


def _raises(error: BaseException):
    def main() -> None:
        raise error

    return main


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ValueError("--gamma nan is not finite"), "tools/x.py: --gamma nan is not finite"),
        (OutputError("--output out.png is a file"), "tools/x.py: --output out.png is a file"),
        (FileNotFoundError(2, "No such file", "a.yaml"), "tools/x.py: [Errno 2] No such file"),
        (KeyError("Non-existent config key: MODEL.X"), "tools/x.py: Non-existent config key"),
        (CheckpointError("cache file 't.pt' is not a checkpoint"), "tools/x.py: cache file"),
        (ValueError("first line\n  second line"), "tools/x.py: first line second line"),
        (SystemExit("tools/x.py: give --input"), "tools/x.py: give --input"),  # no double prefix
    ],
)
def test_a_refusal_is_one_line_on_stderr_and_status_2(
    error: BaseException, line: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as info:
        run_tool(_raises(error), "tools/x.py")
    assert info.value.code == REFUSAL_STATUS
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line) and "Traceback" not in err


def test_a_bug_keeps_its_traceback_and_statuses_pass_through(monkeypatch, capsys) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(ZeroDivisionError):  # not a refusal: Python prints the traceback
        run_tool(_raises(ZeroDivisionError("bug")), "tools/x.py")
    for returned, status in [(3, 3), (None, 0), ({"metrics": 1}, 0), (True, 0)]:
        with pytest.raises(SystemExit) as info:
            run_tool(lambda value=returned: value, "tools/x.py")
        assert info.value.code == status
    with pytest.raises(SystemExit) as info:  # argparse's own exit is left alone
        run_tool(_raises(SystemExit(2)), "tools/x.py")
    assert info.value.code == 2 and capsys.readouterr().err == ""


def test_debug_environment_shows_the_refusal_traceback(monkeypatch, capsys) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(SystemExit) as info:
        run_tool(_raises(ValueError("bad value")), "tools/x.py")
    err = capsys.readouterr().err
    assert info.value.code == REFUSAL_STATUS
    assert "Traceback" in err and err.rstrip().endswith("tools/x.py: bad value")


def test_a_tool_run_from_the_shell_prints_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "evaluate_predictions.py"),
         "--pred-dir", str(tmp_path / "missing"), "--gt-dir", str(tmp_path / "gt"),
         "--split", "synthetic"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == REFUSAL_STATUS, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tools/evaluate_predictions.py: "), lines
    assert "missing" in lines[0]
