"""tools/demo.py and tools/export_onnx.py on a PyTorch model: a γ that is not a finite number and
class names given twice after their prompt spelling are refused (γ before the model is built)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON
from PIL import Image

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402

pytestmark = pytest.mark.detectron2


@pytest.mark.parametrize("gamma", ["nan", "inf", "-inf"])
def test_pytorch_demo_refuses_a_gamma_that_is_not_finite(tiny_opts, tmp_path: Path, gamma) -> None:
    tool = load_script("tools/demo.py", "chimeraseg_demo_gamma_tool")
    photo = tmp_path / "a.jpg"
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(photo)
    out = tmp_path / "out"
    argv = ["--config-file", SYNTHETIC_CONFIG, "--input", str(photo), "--output", str(out),
            f"--gamma={gamma}", "--save-labels", "--allow-random-weights", *tiny_opts]  # fmt: skip
    with pytest.raises(ValueError, match=rf"--gamma {gamma}: γ must be a finite number"):
        tool.main(argv)
    assert not out.exists() or not any(out.iterdir())


def test_pytorch_demo_refuses_twins_after_the_prompt_spelling(tiny_opts, tmp_path: Path) -> None:
    tool = load_script("tools/demo.py", "chimeraseg_demo_twins_tool")
    photo = tmp_path / "a.jpg"
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(photo)
    argv = ["--config-file", SYNTHETIC_CONFIG, "--input", str(photo), "--output",
            str(tmp_path / "out"), "--vocabulary", "grass,sky-other,sky",
            "--allow-random-weights", *tiny_opts]  # fmt: skip
    with pytest.raises(ValueError, match=r"the name 'sky' is given twice, as class 1"):
        tool.main(argv)


@pytest.mark.slow
def test_export_refuses_a_baked_vocabulary_with_twins(tiny_opts, tmp_path: Path) -> None:
    tool = load_script("tools/export_onnx.py", "chimeraseg_export_twins_tool")
    out = tmp_path / "export"
    argv = ["--config-file", SYNTHETIC_CONFIG, "--output", str(out), "--vocabulary",
            "grass,grass", "--allow-random-weights", *tiny_opts]  # fmt: skip
    with pytest.raises((SystemExit, ValueError), match=r"the name 'grass' is given twice"):
        tool.main(argv)
    assert not out.exists()
