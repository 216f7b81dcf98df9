"""Packaging: the core imports without detectron2, and only ``chimeraseg.d2`` may import it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import chimeraseg

PACKAGE_DIR = Path(chimeraseg.__file__).parent


def _core_modules() -> list[str]:
    """All ``chimeraseg`` modules outside ``chimeraseg.d2``."""
    names = []
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="chimeraseg."):
        if not info.name.startswith("chimeraseg.d2"):
            names.append(info.name)
    return names


def test_core_modules_exist():
    assert "chimeraseg.utils.distributed" in _core_modules()


def test_every_core_module_imports_without_detectron2():
    """Imports each core module in a fresh interpreter where ``import detectron2`` fails."""
    modules = _core_modules()
    code = (
        "import sys, importlib\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'detectron2' or name.startswith('detectron2.'):\n"
        "            raise ImportError('detectron2 blocked by test')\n"
        "sys.meta_path.insert(0, _Block())\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "assert not any(k.startswith('detectron2') for k in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_core_file_imports_detectron2_anywhere():
    """Static check: no import of detectron2 (even inside a function) outside ``chimeraseg/d2``."""
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        if "d2" in path.relative_to(PACKAGE_DIR).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "detectron2" for n in names):
                offenders.append(str(path))
    assert offenders == []


def test_version_is_exposed():
    assert importlib.import_module("chimeraseg").__version__.count(".") == 2
