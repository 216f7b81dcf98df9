"""γ and twin class names on the deploy path: refused in one line, at the API and the CLI; a
request the runtime refuses is one message on the web page and the server goes on."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from chimeraseg_test_utils import REPO
from deploy_world import Trained

from chimeraseg.demo.onnx_source import OnnxSource
from chimeraseg.demo.session import InputError
from chimeraseg.deploy import ExportError, OnnxSegmenter
from chimeraseg.deploy.demo import build_onnx_demo
from chimeraseg.deploy.export import export_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("gamma", [math.nan, math.inf, -math.inf, 1e308])
def test_runtime_and_onnx_demo_refuse_a_gamma_that_is_not_finite(trained: Trained, gamma) -> None:
    segmenter = OnnxSegmenter(trained.folder)
    with pytest.raises(ValueError, match="γ must be a finite number"):
        segmenter.predict(trained.val[0][0], gamma)
    with pytest.raises(ValueError, match=r"--gamma .*γ must be a finite number"):
        build_onnx_demo(str(trained.folder), None, None, gamma)


@pytest.mark.parametrize(
    ("vocabulary", "word"), [(["sky-other", "sky"], "sky"), (["grass", "Grass"], "grass")]
)
def test_onnx_demo_refuses_twins_after_the_prompt_spelling(
    trained: Trained, vocabulary: list[str], word: str
) -> None:
    with pytest.raises(ValueError, match=f"the name '{word}' is given twice"):
        build_onnx_demo(str(trained.folder), vocabulary, None, None)


def test_export_refuses_a_baked_vocabulary_with_twins(trained: Trained, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    with pytest.raises(ValueError, match=r"--vocabulary: the name 'concrete wall' is given twice"):
        export_model(trained.model, trained.clip, folder, trained.options,
                     ["wall-concrete", "concrete wall"])  # fmt: skip
    assert not folder.exists() and list(tmp_path.iterdir()) == []


def _demo_cli(trained: Trained, out: Path, *args: str) -> subprocess.CompletedProcess:
    image = sorted((Path(trained.dataset) / "val2017").glob("*.jpg"))[0]
    argv = [sys.executable, str(REPO / "tools" / "demo.py"), "--onnx", str(trained.folder),
            "--input", str(image), "--output", str(out), "--save-labels", *args]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # start-up warnings are not refusals
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gamma", "nan"], r"--gamma nan: γ must be a finite number"),
        (["--vocabulary", "wall-concrete,concrete wall"], r"'concrete wall' is given twice"),
    ],
)
def test_demo_cli_refuses_gamma_and_twins_in_one_line(
    trained: Trained, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = _demo_cli(trained, out, *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("tools/demo.py: "), result.stderr[-2000:]
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_request_the_runtime_refuses_is_one_message_and_the_next_runs(trained: Trained) -> None:
    source = OnnxSource(OnnxSegmenter(trained.folder, graph="fp32"), "export")
    text = source.encode(["grass", "sky"])  # (2, D)
    unseen = np.zeros(2, dtype=bool)
    image = trained.val[0][0]
    graph = source.segmenter._image

    class Failing:  # an onnxruntime failure inside a request (a multi-line message)
        def run(self, *args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT\n  at node 7\n")

    source.segmenter._image = Failing()
    with pytest.raises(InputError, match=r"image_encoder\.onnx: failed on an input") as info:
        source.predict(image, text, torch.from_numpy(unseen), 0.5)
    assert "\n" not in str(info.value)
    source.segmenter._image = graph
    labels = source.predict(image, text, torch.from_numpy(unseen), 0.5)
    assert labels.shape == image.shape[:2]
    source.segmenter._image = Failing()
    with pytest.raises(ExportError):  # the runtime API keeps its own error type
        source.segmenter.predict(image)


def test_export_never_writes_metadata_the_runtime_refuses(trained: Trained, tmp_path: Path) -> None:
    options = dataclasses.replace(trained.options, gamma=math.nan)  # TEST.GAMMA nan
    folder = tmp_path / "export"
    with pytest.raises(ExportError, match=r"metadata\.json would be refused: gamma = nan"):
        export_model(trained.model, trained.clip, folder, options)
    assert not folder.exists() and list(tmp_path.iterdir()) == []
