"""Bad exports and bad inputs: one clear error naming the file or value (never a wrong result)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from deploy_world import Trained

from chimeraseg.deploy import ExportError, OnnxSegmenter
from chimeraseg.deploy.export import export_model

pytestmark = pytest.mark.slow


def _copy(trained: Trained, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(trained.folder, folder)
    return folder


def _edit_metadata(folder: Path, **changes) -> None:
    path = folder / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_folder_without_metadata_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"metadata\.json: missing.*not a ChimeraSeg export"):
        OnnxSegmenter(tmp_path)


def test_a_corrupted_graph_fails_its_hash(trained: Trained, tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    graph = folder / "image_encoder.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"image_encoder\.onnx: SHA-256 .* differs"):
        OnnxSegmenter(folder, graph="fp32")


def test_a_missing_graph_is_named(trained: Trained, tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    (folder / "text_encoder.onnx").unlink()
    with pytest.raises(ExportError, match=r"text_encoder\.onnx: missing"):
        OnnxSegmenter(folder, graph="fp32")


def test_metadata_of_another_model_is_refused(trained: Trained, tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    _edit_metadata(folder, model_id="0" * 64)
    with pytest.raises(ExportError, match=r"graph of model .*\(files from another export\)"):
        OnnxSegmenter(folder, graph="fp32")


def test_a_wrong_opset_is_refused(trained: Trained, tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    _edit_metadata(folder, opset=9)
    with pytest.raises(ExportError, match=r"metadata\.json: opset 9 is not supported"):
        OnnxSegmenter(folder)


def test_missing_onnxruntime_is_one_line(trained: Trained, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ImportError, match=r"needs onnxruntime: pip install onnxruntime") as info:
        OnnxSegmenter(trained.folder)
    assert "\n" not in str(info.value)


def test_vocabulary_errors_name_the_value(trained: Trained) -> None:
    segmenter = OnnxSegmenter(trained.folder, graph="fp32")
    d = segmenter.embed_dim
    with pytest.raises(ValueError, match=rf"embeddings \(2, {d + 1}\) must be \(2, {d}\)"):
        segmenter.set_vocabulary(["a", "b"], embeddings=np.ones((2, d + 1), np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        segmenter.set_vocabulary(["a", "b"], embeddings=np.full((2, d), np.nan, np.float32))
    with pytest.raises(ValueError, match="vocabulary is empty"):
        segmenter.set_vocabulary([])
    with pytest.raises(ValueError, match=r"unseen ids \[5\]"):
        segmenter.set_vocabulary(["a", "b"], [5])
    with pytest.raises(ValueError, match="empty comma-separated synonym"):
        segmenter.set_vocabulary(["sofa, "])
    with pytest.raises(ExportError, match="fixed vocabulary"):
        OnnxSegmenter(trained.folder, graph="baked").set_vocabulary(["grass"])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((40, 40), np.uint8), r"shape \(40, 40\) is not an RGB image"),
        (np.zeros((40, 40, 4), np.uint8), r"shape \(40, 40, 4\) is not an RGB image"),
        (np.zeros((40, 40, 3), np.float32), "dtype float32; expected uint8"),
        ([[0, 0, 0]], "expected a numpy"),
        (np.zeros((0, 40, 3), np.uint8), r"shape \(0, 40, 3\) is empty"),
    ],
)
def test_non_rgb_arrays_are_refused(trained: Trained, array, message: str) -> None:
    segmenter = OnnxSegmenter(trained.folder)
    with pytest.raises(ValueError, match=message):
        segmenter.predict(array)


def test_export_never_writes_into_a_used_folder(trained: Trained, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_model(trained.model, trained.clip, used, trained.options)
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
