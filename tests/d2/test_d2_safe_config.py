"""Every entry point reads YAML configs safely: a code-running tag is refused naming its file."""

from __future__ import annotations

from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402

from chimeraseg.utils.config_yaml import ConfigFileError  # noqa: E402

pytestmark = pytest.mark.detectron2


def _evil_config(tmp_path: Path, marker: Path, base: str | None = None) -> Path:
    """A config whose ``SOLVER.BASE_LR`` tag would create ``marker`` if loaded unsafely."""
    head = f"_BASE_: {base}\n" if base else ""
    path = tmp_path / "evil.yaml"
    path.write_text(
        f"{head}SOLVER:\n  BASE_LR: !!python/object/apply:builtins.open [{str(marker)!r}, 'w']\n"
    )
    return path


def test_get_chimeraseg_cfg_refuses_a_python_tag_and_runs_nothing(tmp_path) -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg

    marker = tmp_path / "pwned"
    evil = _evil_config(tmp_path, marker, base=SYNTHETIC_CONFIG)
    with pytest.raises(ConfigFileError, match=r"refusing config file '.*evil\.yaml'"):
        get_chimeraseg_cfg(str(evil))
    assert not marker.exists()


def test_a_tag_reached_through_base_names_the_base(tmp_path) -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg

    marker = tmp_path / "pwned"
    _evil_config(tmp_path, marker)
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: evil.yaml\nSOLVER:\n  MAX_ITER: 3\n")
    with pytest.raises(ConfigFileError, match=r"refusing config file '.*evil\.yaml'"):
        get_chimeraseg_cfg(str(child))
    assert not marker.exists()


def test_plain_config_with_bases_still_merges(tmp_path) -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg

    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {SYNTHETIC_CONFIG}\nSOLVER:\n  MAX_ITER: 7\n")
    cfg = get_chimeraseg_cfg(str(child))
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.MODEL.BACKBONE.NAME == "mit_b0"


def test_train_net_demo_and_run_demo_refuse_the_tag(tmp_path) -> None:
    from detectron2.engine import default_argument_parser

    marker = tmp_path / "pwned"
    evil = str(_evil_config(tmp_path, marker, base=SYNTHETIC_CONFIG))
    train_net = load_script("tools/train_net.py", "chimeraseg_train_net_safe_cfg")
    with pytest.raises(ConfigFileError, match="evil.yaml"):
        train_net.main(default_argument_parser().parse_args(["--config-file", evil]))
    demo = load_script("tools/demo.py", "chimeraseg_demo_safe_cfg")
    with pytest.raises(ConfigFileError, match="evil.yaml"):
        demo.main(["--config-file", evil, "--input", "x.jpg", "--output", str(tmp_path / "o")])
    run_demo = load_script("tools/run_demo.py", "chimeraseg_run_demo_safe_cfg")
    with pytest.raises(ConfigFileError, match="evil.yaml"):
        run_demo.main(["--config-file", evil, "--allow-random-clip", "--output", str(tmp_path)])
    assert not marker.exists()
