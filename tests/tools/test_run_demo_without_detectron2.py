"""`make demo` without detectron2 stops first with the one-line install instruction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN_DEMO = Path(__file__).resolve().parents[2] / "tools" / "run_demo.py"


def test_run_demo_without_detectron2_prints_install_hint_and_fails(tmp_path):
    code = (
        "import sys, runpy\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'detectron2' or name.startswith('detectron2.'):\n"
        "            raise ImportError('detectron2 blocked by test')\n"
        "sys.meta_path.insert(0, _Block())\n"
        f"sys.argv = ['run_demo.py', '--datasets-root', {str(tmp_path)!r}]\n"
        f"runpy.run_path({str(RUN_DEMO)!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "detectron2 is not installed" in lines[0]
    assert "pip install" in lines[0] and "detectron2.git" in lines[0]
    assert not (tmp_path / "synthetic_zs").exists()  # stopped before any work
