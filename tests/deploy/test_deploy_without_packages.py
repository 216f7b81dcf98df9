"""The runtime without torch (baked vocabulary) and the ONNX demo without detectron2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import REPO
from deploy_world import BAKED, Trained

from chimeraseg.data.io import read_image, read_label
from chimeraseg.deploy import OnnxSegmenter

pytestmark = pytest.mark.slow

BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError(name + ' blocked by test')
sys.meta_path.insert(0, _Block())
"""


def _run(code: str, blocked: set[str]) -> subprocess.CompletedProcess:
    script = BLOCK.format(blocked=sorted(blocked)) + code
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )


def _demo_code(argv: list[str]) -> str:
    demo = str(REPO / "tools" / "demo.py")
    return f"import runpy\nsys.argv = {argv!r}\nrunpy.run_path({demo!r}, run_name='__main__')\n"


def test_baked_runtime_needs_neither_torch_nor_detectron2(trained: Trained, tmp_path: Path) -> None:
    image = trained.val[0][0]
    np.save(tmp_path / "image.npy", image)
    code = (
        "import numpy as np\n"
        "from chimeraseg.deploy import OnnxSegmenter\n"
        f"s = OnnxSegmenter({str(trained.folder)!r})\n"
        f"p = s.predict(np.load({str(tmp_path / 'image.npy')!r}))\n"
        f"np.save({str(tmp_path / 'labels.npy')!r}, p.labels)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(s.graph, p.names)\n"
    )
    result = _run(code, {"torch", "detectron2", "open_clip"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0] == "baked"
    expected = OnnxSegmenter(trained.folder).predict(image).labels
    assert np.array_equal(np.load(tmp_path / "labels.npy"), expected)


def test_onnx_demo_runs_without_detectron2(trained: Trained, tmp_path: Path) -> None:
    images = sorted((Path(trained.dataset) / "val2017").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    argv = ["demo.py", "--onnx", str(trained.folder), "--input", *map(str, images), "--output",
            str(out), "--vocabulary", "grass,sky,purple cat", "--unseen", "purple cat",
            "--save-labels"]  # fmt: skip
    result = _run(_demo_code(argv), {"detectron2"})
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "vocabulary.json").read_text())
    assert [c["unseen"] for c in record["classes"]] == [False, False, True]
    segmenter = OnnxSegmenter(trained.folder, graph="fp32")
    segmenter.set_vocabulary(["grass", "sky", "purple cat"], [2])
    for path in images:
        labels = read_label(str(out / f"{path.stem}_labels.png"), 3)
        assert np.array_equal(labels, segmenter.predict(read_image(str(path))).labels)
        overlay = read_image(str(out / f"{path.stem}.png"))
        assert overlay.shape[1] == labels.shape[1] and overlay.shape[0] > labels.shape[0]


def test_onnx_demo_default_vocabulary_is_the_baked_one(trained: Trained, tmp_path: Path) -> None:
    images = sorted((Path(trained.dataset) / "val2017").glob("*.jpg"))[:1]
    out = tmp_path / "out"
    argv = ["demo.py", "--onnx", str(trained.folder), "--input", str(images[0]), "--output",
            str(out), "--save-labels"]  # fmt: skip
    result = _run(_demo_code(argv), {"detectron2"})
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "vocabulary.json").read_text())
    assert [c["name"] for c in record["classes"]] == BAKED
