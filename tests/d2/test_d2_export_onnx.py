"""tools/export_onnx.py on a detectron2 config; tools/demo.py --onnx against the PyTorch demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402

from chimeraseg.data.io import read_label  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.detectron2]


@pytest.fixture(scope="module")
def weights_opts(tiny_opts, synthetic_root, tmp_path_factory) -> list[str]:
    """``tiny_opts`` with one saved set of (untrained) weights, as a trained checkpoint is."""
    from detectron2.modeling import build_model

    from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer
    from chimeraseg.d2.config import get_chimeraseg_cfg

    folder = tmp_path_factory.mktemp("weights")
    ChimeraSegCheckpointer(
        build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts)), str(folder)
    ).save("w")
    return [*tiny_opts, "MODEL.WEIGHTS", str(folder / "w.pth")]


@pytest.fixture(scope="module")
def export_dir(weights_opts, tmp_path_factory) -> Path:
    tool = load_script("tools/export_onnx.py", "chimeraseg_export_tool")
    out = tmp_path_factory.mktemp("onnx") / "export"
    tool.main(["--config-file", SYNTHETIC_CONFIG, "--output", str(out), "--vocabulary",
               "grass,sky,purple cat", "--unseen", "purple cat", *weights_opts])  # fmt: skip
    return out


def test_export_records_the_config_and_refuses_a_used_folder(export_dir, weights_opts) -> None:
    meta = json.loads((export_dir / "metadata.json").read_text())
    assert meta["source"]["config_sha256"] and meta["source"]["weights_sha256"]
    assert meta["size_divisibility"] == 32
    assert meta["test_resize"] == [160, 1024] and meta["opset"] == 17
    assert meta["baked"] == {"names": ["grass", "sky", "purple cat"], "unseen_ids": [2]}
    assert sorted(meta["files"]) == ["image_encoder.onnx", "segmenter.onnx", "text_encoder.onnx"]
    before = {p.name: p.stat().st_mtime_ns for p in export_dir.iterdir()}
    tool = load_script("tools/export_onnx.py", "chimeraseg_export_tool")
    with pytest.raises(SystemExit, match="not an empty folder"):
        tool.main(["--config-file", SYNTHETIC_CONFIG, "--output", str(export_dir),
                   *weights_opts])  # fmt: skip
    assert {p.name: p.stat().st_mtime_ns for p in export_dir.iterdir()} == before


def test_onnx_demo_draws_what_the_pytorch_demo_draws(
    export_dir, weights_opts, synthetic_root, tmp_path
):
    import cv2

    demo = load_script("tools/demo.py", "chimeraseg_demo_tool")
    images = sorted((Path(synthetic_root) / "synthetic_zs" / "val2017").glob("*.jpg"))
    common = ["--input", *map(str, images), "--vocabulary", "grass,sky,purple cat", "--unseen",
              "purple cat", "--save-labels"]  # fmt: skip
    demo.main(["--config-file", SYNTHETIC_CONFIG, "--output", str(tmp_path / "torch"), *common,
               *weights_opts])  # fmt: skip
    demo.main(["--onnx", str(export_dir), "--output", str(tmp_path / "onnx"), *common])
    agree = total = 0
    for image in images:
        a = read_label(str(tmp_path / "torch" / f"{image.stem}_labels.png"), 3)
        b = read_label(str(tmp_path / "onnx" / f"{image.stem}_labels.png"), 3)
        agree, total = agree + int((a == b).sum()), total + a.size
        overlay_a = cv2.imread(str(tmp_path / "torch" / f"{image.stem}.png"))
        overlay_b = cv2.imread(str(tmp_path / "onnx" / f"{image.stem}.png"))
        assert overlay_a.shape == overlay_b.shape
        if np.array_equal(a, b):
            assert np.array_equal(overlay_a, overlay_b)  # same labels: the very same drawing
    assert agree / total >= 0.999
    vocab_a = json.loads((tmp_path / "torch" / "vocabulary.json").read_text())
    vocab_b = json.loads((tmp_path / "onnx" / "vocabulary.json").read_text())
    assert vocab_a == vocab_b
