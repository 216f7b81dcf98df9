"""CI's pass with detectron2 fails, rather than skips, when detectron2 cannot be imported."""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import REPO, REQUIRE_DETECTRON2_ENV, load_script


@pytest.fixture()
def root_conftest():
    """The top-level ``tests/conftest.py`` as a module (``tests/d2`` shadows the name)."""
    return load_script("tests/conftest.py", "chimeraseg_root_conftest")


@pytest.mark.parametrize("required", ["1", None])
def test_missing_detectron2_fails_only_when_required(root_conftest, monkeypatch, required):
    monkeypatch.setattr(root_conftest, "HAS_DETECTRON2", False)
    if required is None:
        monkeypatch.delenv(REQUIRE_DETECTRON2_ENV, raising=False)
        root_conftest.pytest_configure(None)  # skips happen later, per test
        return
    monkeypatch.setenv(REQUIRE_DETECTRON2_ENV, required)
    expected = f"{REQUIRE_DETECTRON2_ENV}=1 but detectron2 is not installed"
    with pytest.raises(pytest.UsageError, match=expected):
        root_conftest.pytest_configure(None)


def test_ci_runs_the_suite_without_and_with_detectron2():
    """``.ci/run`` runs the suite before detectron2 is built, then with it required."""
    script = (REPO / ".ci" / "run").read_text()
    without = script.index("make test")
    build = script.index("make detectron2")
    required = script.index(f"{REQUIRE_DETECTRON2_ENV}=1 make test")
    assert without < build < required
