"""tools/demo.py --onnx-graph: which image graph of an export the ONNX demo runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from deploy_world import Trained

from chimeraseg.deploy.runtime import GRAPHS

TOOL = Path(__file__).resolve().parents[2] / "tools" / "demo.py"


def _tool():
    spec = importlib.util.spec_from_file_location("demo_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _graph_of(trained: Trained, *flags: str) -> str:
    tool = _tool()
    args = tool.get_parser().parse_args(
        ["--onnx", str(trained.folder), "--input", "x.png", "--output", "out", *flags]
    )
    return tool._build(args, tool._vocabulary(args), None).segmenter.graph


@pytest.mark.parametrize("graph", GRAPHS)
def test_onnx_graph_selects_the_runtime_graph(trained: Trained, graph: str) -> None:
    assert _graph_of(trained, "--onnx-graph", graph) == graph


def test_default_graph_is_baked_then_fp32_for_a_vocabulary(trained: Trained) -> None:
    assert _graph_of(trained) == "baked"
    assert _graph_of(trained, "--vocabulary", "grass,sky") == "fp32"
    assert _graph_of(trained, "--vocabulary", "grass,sky", "--onnx-graph", "int8") == "int8"


def test_baked_graph_refuses_another_vocabulary(trained: Trained) -> None:
    with pytest.raises(SystemExit, match="baked graph"):
        _graph_of(trained, "--vocabulary", "grass,sky", "--onnx-graph", "baked")


def test_onnx_graph_needs_onnx_and_a_known_name(tmp_path: Path, capsys) -> None:
    tool = _tool()
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    with pytest.raises(SystemExit, match="--onnx-graph needs --onnx DIR"):
        tool.main(["--onnx-graph", "int8", "--input", str(image), "--output", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        tool.get_parser().parse_args(["--onnx-graph", "fp16", "--output", "o"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
