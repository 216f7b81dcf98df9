"""requirements/runtime.txt (what running needs) against the CI lock and setup.py.

The runtime file is the user's install (INSTALL.md): no test or lint tools, no torch build forced
over a CUDA torch. The CI lock pins the same versions, and setup.py asks for the same packages.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import setuptools

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / "requirements" / "runtime.txt"
CI_LOCK = REPO / "requirements" / "ci.txt"
# Packages only the tests, lint, mutation testing or the browser test use.
DEVELOPMENT_ONLY = {"pytest", "ruff", "mutmut", "coverage", "selenium", "iniconfig", "pluggy"}


def _pins(path: Path) -> dict[str, str]:
    """``{normalised name: version}`` of the ``name==version`` lines of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        assert match, f"{path.name}: '{line}' is not a 'name==version' pin"
        pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def _setup_arguments(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The keyword arguments setup.py passes to ``setup()`` (nothing is built)."""
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.setattr(sys, "argv", ["setup.py"])
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "setup.py"))
    return captured


def test_runtime_pins_equal_the_ci_lock() -> None:
    runtime, lock = _pins(RUNTIME), _pins(CI_LOCK)
    assert len(runtime) >= 10
    differing = {name: (v, lock.get(name)) for name, v in runtime.items() if lock.get(name) != v}
    assert not differing, f"runtime.txt pin != ci.txt pin (runtime, ci): {differing}"


def test_runtime_has_no_development_tools_and_no_torch() -> None:
    runtime = set(_pins(RUNTIME))
    assert not runtime & DEVELOPMENT_ONLY
    assert not runtime & {"torch", "torchvision"}, "torch is installed first, for your CUDA"


def test_setup_asks_for_the_runtime_packages_at_their_tested_versions(monkeypatch) -> None:
    arguments = _setup_arguments(monkeypatch)
    requested = {}
    for requirement in arguments["install_requires"]:
        name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=(\S+)", requirement).groups()
        requested[re.sub(r"[-_.]+", "-", name).lower()] = version
    torch_free = {k: v for k, v in requested.items() if k not in {"torch", "torchvision"}}
    assert torch_free == _pins(RUNTIME)
    assert {"torch", "torchvision"} <= set(requested)


def test_python_floor_is_the_one_the_pins_need(monkeypatch) -> None:
    assert _setup_arguments(monkeypatch)["python_requires"] == ">=3.11"
    assert "Python >= 3.11" in (REPO / "INSTALL.md").read_text()
