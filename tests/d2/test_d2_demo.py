"""tools/demo.py writes an overlay (and a similarity map) for a given vocabulary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402


def _demo_module():
    return load_script("tools/demo.py", "chimeraseg_demo_tool")


def test_demo_writes_images_for_a_custom_vocabulary(tiny_opts, synthetic_root, tmp_path):
    import cv2

    demo = _demo_module()
    image = sorted((Path(synthetic_root) / "synthetic_zs" / "val2017").glob("*.jpg"))[0]
    demo.main(["--config-file", SYNTHETIC_CONFIG, "--input", str(image), "--output",
               str(tmp_path), "--vocabulary", "cat,grass,sky", "--unseen", "cat",
               "--similarity-map", "--allow-random-weights", *tiny_opts])  # fmt: skip
    out = cv2.imread(str(tmp_path / (image.stem + ".png")))
    assert out is not None and out.shape[1] == 200 and out.shape[0] > 160  # overlay + legend
    assert os.path.isfile(tmp_path / (image.stem + "_similarity.png"))


def test_demo_rejects_unseen_names_outside_the_vocabulary(tiny_opts, synthetic_root, tmp_path):
    demo = _demo_module()
    with pytest.raises(ValueError, match="dog"):
        demo.build_demo(SYNTHETIC_CONFIG, tiny_opts, ["cat", "sky"], ["dog"])
