"""The web demo on an ONNX export (``tools/web_demo.py --onnx``): no detectron2 involved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from deploy_world import Trained
from PIL import Image

from chimeraseg.clip.names import unseen_indices
from chimeraseg.demo.onnx_source import OnnxSource
from chimeraseg.demo.session import InputError, Limits, WebDemo
from chimeraseg.deploy.runtime import OnnxSegmenter


@pytest.fixture
def demo(trained: Trained):
    web = WebDemo(OnnxSource(OnnxSegmenter(trained.folder, graph="fp32"), "export"), Limits())
    yield web
    web.close()


def test_sessions_get_the_runtime_prediction_of_their_own_vocabulary(
    demo: WebDemo, trained: Trained, tmp_path: Path
) -> None:
    image = trained.val[0][0]  # (H, W, 3) uint8
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    vocabularies = [(["grass", "sky, blue sky", "purple cat"], "purple cat"), (["sky", "sand"], "")]
    results = [demo.segment(str(path), "\n".join(v), u, 0.5) for v, u in vocabularies * 2]
    for (names, unseen), result in zip(vocabularies * 2, results):
        reference = OnnxSegmenter(trained.folder, graph="fp32")
        reference.set_vocabulary(names, unseen_indices(names, [unseen] if unseen else []))
        np.testing.assert_array_equal(result.prediction, reference.predict(image, 0.5).labels)
        record = json.loads(Path(result.vocabulary_json).read_text())
        assert [c["name"] for c in record["classes"]] == names
        assert result.overlay.shape == image.shape
    assert demo.text.computed == 2  # the second round came from the cache
    with pytest.raises(InputError, match="no CLIP teacher"):
        demo.class_map(results[0], results[0].default_class())


def test_baked_graph_is_refused_with_the_reason(trained: Trained) -> None:
    with pytest.raises(ValueError, match="fixed vocabulary"):
        OnnxSource(OnnxSegmenter(trained.folder, graph="baked"), "export")


def test_web_tool_onnx_source_and_its_errors(trained: Trained, tmp_path: Path) -> None:
    from chimeraseg_test_utils import load_script

    tool = load_script("tools/web_demo.py", "chimeraseg_web_demo_tool_onnx")
    source = tool.onnx_source(str(trained.folder))
    assert source.default_vocabulary and str(trained.folder) in source.description
    with pytest.raises(SystemExit, match="--onnx .*missing"):
        tool.onnx_source(str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="takes no config"):
        tool.main(["--onnx", str(trained.folder), "--config-file", "x.yaml"])
