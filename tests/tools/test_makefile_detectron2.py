"""The Makefile's detectron2 step, offline: pinned source, order, the no-network line, overrides.

A stand-in virtualenv (``bin/python`` that has no detectron2, ``bin/pip`` that logs its arguments
and hands the source install to the real pip with ``--dry-run``) lets the recipe run for real
without network and without installing anything.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chimeraseg_test_utils import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

PINNED = "02b5c4e295e990042a714712c21dc79b731e8833"


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _fake_venv(tmp_path: Path) -> Path:
    """``bin/python`` fails ``import detectron2``; ``bin/pip`` logs and dry-runs real installs."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
    (venv / "bin" / "pip").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        'case "$*" in *--no-build-isolation*) ;; *) exit 0 ;; esac\n'
        f'exec "{sys.executable}" -m pip "$@" --dry-run --no-index --no-deps\n'
    )
    for name in ("python", "pip"):
        (venv / "bin" / name).chmod(0o755)
    (venv / "bin" / ".installed").touch()  # newer than requirements/ci.txt: torch is "in"
    return venv


def test_commit_is_written_once_and_the_install_guide_states_it() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert len(re.findall(r"\b[0-9a-f]{40}\b", makefile)) == 1
    assert f"DETECTRON2_COMMIT ?= {PINNED}" in makefile
    assert PINNED in (REPO / "INSTALL.md").read_text()


def test_demo_installs_detectron2_after_torch_and_test_never_does(tmp_path) -> None:
    fresh = str(tmp_path / "fresh")
    demo = _make("-n", "demo", f"VENV={fresh}").stdout
    lines = demo.splitlines()
    torch_at = next(i for i, x in enumerate(lines) if "-r requirements/ci.txt" in x)
    d2_at = next(i for i, x in enumerate(lines) if "--no-build-isolation" in x)
    assert torch_at < d2_at
    assert f"detectron2.git@{PINNED}" in lines[d2_at]
    assert lines[-1].endswith("tools/run_demo.py ")
    test = _make("-n", "test", f"VENV={fresh}").stdout
    assert "--no-build-isolation" not in test and "git+" not in test


def test_unreachable_source_fails_with_one_clear_line(tmp_path) -> None:
    venv = _fake_venv(tmp_path)
    source = f"git+file://{tmp_path}/no-such-repo@{PINNED}"
    result = _make("detectron2", f"VENV={venv}", f"DETECTRON2_SOURCE={source}")
    assert result.returncode != 0
    ours = [x for x in result.stderr.splitlines() if x.startswith("make: could not install")]
    assert len(ours) == 1
    assert source in ours[0] and "DETECTRON2_SOURCE=/path/to/detectron2" in ours[0]
    logged = (tmp_path / "pip.log").read_text().splitlines()
    assert logged[0] == "install --quiet -r requirements/detectron2.txt"
    assert logged[1] == f"install --quiet --no-build-isolation {source}"
    assert not (venv / "bin" / ".detectron2").exists()


def test_local_source_is_used_and_the_step_is_not_repeated(tmp_path) -> None:
    venv = _fake_venv(tmp_path)
    local = tmp_path / "detectron2"
    local.mkdir()
    (local / "setup.py").write_text("from setuptools import setup\nsetup(name='detectron2')\n")
    result = _make("detectron2", f"VENV={venv}", f"DETECTRON2_SOURCE={local}")
    assert result.returncode == 0, result.stderr
    assert f"install --quiet --no-build-isolation {local}" in (tmp_path / "pip.log").read_text()
    assert (venv / "bin" / ".detectron2").exists()
    again = _make("detectron2", f"VENV={venv}", f"DETECTRON2_SOURCE={local}")
    assert again.returncode == 0
    assert len((tmp_path / "pip.log").read_text().splitlines()) == 2
