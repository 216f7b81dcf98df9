"""A tampered export folder is refused with one line naming the key or file (never run).

One table: each row changes one thing of a real export (``deploy_world.py``) and names the
message that must come back, at the runtime API and, for a few rows, through
``tools/demo.py --onnx`` (one line on stderr, no traceback, nothing written).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from chimeraseg_test_utils import REPO
from deploy_world import Trained

from chimeraseg.deploy import ExportError, OnnxSegmenter
from chimeraseg.deploy.metadata import file_sha256

pytestmark = pytest.mark.slow

Tamper = Callable[[Path, Path], None]  # (the copy, the original export)


def _link_copy(source: Path, target: Path) -> None:
    """The export's files hard-linked into ``target`` (tampering replaces, never edits, a file)."""
    target.mkdir()
    for item in source.iterdir():
        os.link(item, target / item.name)


def _metadata(folder: Path) -> dict:
    return json.loads((folder / "metadata.json").read_text())


def _write_metadata(folder: Path, text: str) -> None:
    (folder / "metadata.json").unlink()
    (folder / "metadata.json").write_text(text)


def _set(key: str, value) -> Tamper:
    """Sets ``key`` (dotted for nested keys) to ``value``."""

    def tamper(folder: Path, _: Path) -> None:
        data = _metadata(folder)
        *parents, last = key.split(".")
        target = data
        for part in parents:
            target = target[part]
        target[last] = value
        _write_metadata(folder, json.dumps(data))

    return tamper


def _raw(key: str, literal: str) -> Tamper:
    """Writes ``key``'s value as a raw JSON literal (``NaN``, which json.dumps never writes)."""

    def tamper(folder: Path, _: Path) -> None:
        data = _metadata(folder)
        data[key] = "@@"
        _write_metadata(folder, json.dumps(data).replace('"@@"', literal))

    return tamper


def _deep_json(folder: Path, _: Path) -> None:
    depth = 200_000
    _write_metadata(folder, '{"format": "chimeraseg-onnx", "x": ' + "[" * depth + "]" * depth + "}")


def _replace_graph(name: str, content: bytes | None = None, link: Path | None = None) -> Tamper:
    """Puts ``content`` (or a symlink to ``link``) in place of graph ``name``, hash updated."""

    def tamper(folder: Path, _: Path) -> None:
        path = folder / name
        path.unlink()
        if link is not None:
            path.symlink_to(link)
        else:
            path.write_bytes(content)
        data = _metadata(folder)
        data["files"][name] = file_sha256(path)
        _write_metadata(folder, json.dumps(data))

    return tamper


def _int8_as_fp32(folder: Path, original: Path) -> None:
    _replace_graph("image_encoder.onnx", (original / "image_encoder_int8.onnx").read_bytes())(
        folder, original
    )


def _fp32_as_int8(folder: Path, original: Path) -> None:
    _replace_graph("image_encoder_int8.onnx", (original / "image_encoder.onnx").read_bytes())(
        folder, original
    )


def _graph_symlink_outside(folder: Path, original: Path) -> None:
    _replace_graph("image_encoder.onnx", link=original / "image_encoder.onnx")(folder, original)


def _metadata_symlink_outside(folder: Path, original: Path) -> None:
    (folder / "metadata.json").unlink()
    (folder / "metadata.json").symlink_to(original / "metadata.json")


def _external_data(folder: Path, original: Path) -> None:
    import onnx

    model = onnx.load(str(original / "image_encoder.onnx"))
    (folder / "image_encoder.onnx").unlink()
    onnx.save(model, str(folder / "image_encoder.onnx"), save_as_external_data=True,
              location="weights.bin", size_threshold=0)  # fmt: skip
    _replace_graph("image_encoder.onnx", (folder / "image_encoder.onnx").read_bytes())(
        folder, original
    )


def _reorder_baked(folder: Path, _: Path) -> None:
    data = _metadata(folder)
    data["baked"]["names"] = data["baked"]["names"][::-1]
    _write_metadata(folder, json.dumps(data))


def _drop(key: str) -> Tamper:
    def tamper(folder: Path, _: Path) -> None:
        data = _metadata(folder)
        del data[key]
        _write_metadata(folder, json.dumps(data))

    return tamper


TWELVE = 12  # the synthetic world's classes
# (row id, tamper, graph to load, the message: names the key or file and the value)
ROWS: list[tuple[str, Tamper, str, str]] = [
    ("tokenizer-hf-hub", _set("tokenizer.model", "hf-hub:attacker/repo"), "fp32",
     r"tokenizer\.model = 'hf-hub:attacker/repo': must be one of \[null\]"),
    ("tokenizer-local-dir", _set("tokenizer.model", "local-dir:/etc"), "fp32",
     r"tokenizer\.model = 'local-dir:/etc'"),
    ("context-length-5", _set("tokenizer.context_length", 5), "fp32",
     r"tokenizer\.context_length = 5: must be an integer in \[8, 1024\]"),
    ("context-length-1e9", _set("tokenizer.context_length", 10**9), "fp32",
     r"tokenizer\.context_length = 1000000000"),
    ("context-length-not-the-graph's", _set("tokenizer.context_length", 40), "fp32",
     r"text_encoder\.onnx: input .* is not 'tokens' tensor\(int64\) \['\?', 40\]"),
    ("logit-tau-tiny", _set("logit_tau", 1e-300), "fp32", r"logit_tau = 1e-300: must be a finite"),
    ("logit-tau-nan", _raw("logit_tau", "NaN"), "fp32", r"logit_tau = nan: must be a finite"),
    ("gamma-huge", _set("gamma", 1e308), "fp32", r"gamma = 1e\+308: must be a finite number"),
    ("gamma-nan", _raw("gamma", "NaN"), "fp32", r"gamma = nan"),
    ("gamma-infinity", _raw("gamma", "Infinity"), "fp32", r"gamma = inf"),
    ("template-without-slot", _set("templates", ["a photo"]), "fp32",
     r"templates\[0\] = 'a photo': a template needs exactly one '\{\}' slot"),
    ("template-attribute", _set("templates", ["{.__class__}"]), "fp32",
     r"templates\[0\] = '\{\.__class__\}'"),
    ("template-index-attribute", _set("templates", ["{} {0.x}"]), "fp32",
     r"templates\[0\] = '\{\} \{0\.x\}'"),
    ("template-format-spec", _set("templates", ["a {:>99}"]), "fp32", r"templates\[0\]"),
    ("template-two-slots", _set("templates", ["{} {}"]), "fp32", r"templates\[0\] = '\{\} \{\}'"),
    ("templates-empty", _set("templates", []), "fp32",
     r"templates = \[\]: must be a list of 1 to 256 items"),
    ("baked-names-reordered", _reorder_baked, "baked",
     r"segmenter\.onnx: its baked vocabulary is not metadata\.json's baked names"),
    ("baked-unseen-out-of-range", _set("baked.unseen_ids", [7]), "baked",
     r"baked\.unseen_ids = \[7\]: ids \[7\] are outside baked\.names"),
    ("vocabulary-twelve-twins", _set("train_vocabulary", ["grass"] * TWELVE), "fp32",
     r"train_vocabulary = .*'grass' is given twice"),
    ("vocabulary-humanised-twins", _set("train_vocabulary", ["sky-other", "sky"] + ["x"] * 10),
     "fp32", r"train_vocabulary = .*'sky' is given twice"),
    ("vocabulary-empty", _set("train_vocabulary", []), "fp32", r"train_vocabulary = \[\]"),
    ("int8-graph-as-fp32", _int8_as_fp32, "fp32",
     r"image_encoder\.onnx: a quantised graph \(DynamicQuantizeLinear, MatMulInteger\)"),
    ("fp32-graph-as-int8", _fp32_as_int8, "int8",
     r"image_encoder_int8\.onnx: not quantised, but metadata\.json lists it as the int8 graph"),
    ("colors-short", _set("colors", [[1, 2, 3]] * 5), "fp32",
     rf"colors = .*needs one colour per class of train_vocabulary \({TWELVE}\)"),
    ("colors-out-of-range", _set("colors", [[1, 2, 300]] * TWELVE), "fp32",
     r"colors\[0\]\[2\] = 300"),
    ("embed-dim-string", _set("embed_dim", "64"), "fp32", r"embed_dim = '64': must be an integer"),
    ("embed-dim-float", _set("embed_dim", 64.0), "fp32", r"embed_dim = 64\.0: must be an integer"),
    ("embed-dim-not-the-graph's", _set("embed_dim", 65), "fp32",
     r"image_encoder\.onnx: output .* is not 'embeddings' tensor\(float\) \['\?', 65"),
    ("files-as-list", _set("files", ["image_encoder.onnx"]), "fp32",
     r"files = \['image_encoder\.onnx'\]: must be an object"),
    ("files-dotdot", _set("files", {"../image_encoder.onnx": "0" * 64}), "fp32",
     r"files key = '\.\./image_encoder\.onnx': must be one of"),
    ("inference-empty", _set("inference", {}), "fp32",
     r"inference = \['mode', 'slide_crop', 'slide_stride'\]: missing keys"),
    ("inference-mode-unknown", _set("inference.mode", "tiles"), "fp32",
     r"inference\.mode = 'tiles': must be one of \[\"whole\", \"slide\"\]"),
    ("slide-stride-zero", _set("inference.slide_stride", [0, 40]), "fp32",
     r"inference\.slide_stride\[0\] = 0"),
    ("slide-stride-above-crop", _set("inference.slide_stride", [40, 65]), "fp32",
     r"inference\.slide_stride\[1\] = 65: a stride above the window"),
    ("slide-crop-below-minimum", _set("inference.slide_crop", [8, 64]), "fp32",
     r"inference\.slide_crop\[0\] = 8: a window below min_input_size \(29\)"),
    ("json-nested-200k", _deep_json, "fp32", r"metadata\.json: .*JSON nested too deep"),
    ("size-divisibility-fraction", _set("size_divisibility", 32.5), "fp32",
     r"size_divisibility = 32\.5: must be an integer"),
    ("size-divisibility-huge", _set("size_divisibility", 10**6), "fp32",
     r"size_divisibility = 1000000"),
    ("unseen-ids-out-of-range", _set("unseen_ids", [2, 99]), "fp32",
     r"unseen_ids = \[2, 99\]: ids \[99\] are outside train_vocabulary \(12 names\)"),
    ("unseen-ids-negative", _set("unseen_ids", [-1]), "fp32", r"unseen_ids\[0\] = -1"),
    ("seen-and-unseen", _set("seen_ids", [0, 2]), "fp32", r"unseen_ids = .*both seen and unseen"),
    ("pixel-mean-two-values", _set("pixel_mean", [123.0, 116.0]), "fp32",
     r"pixel_mean = \[123\.0, 116\.0\]: must be a list of 3 items"),
    ("pixel-std-zero", _set("pixel_std", [0, 1, 1]), "fp32", r"pixel_std\[0\] = 0"),
    ("resize-negative", _set("test_resize", [-1, 512]), "fp32", r"test_resize\[0\] = -1"),
    ("resize-huge", _set("test_resize", [10**6, 10**6]), "fp32", r"test_resize\[0\] = 1000000"),
    ("resize-max-below-short", _set("test_resize", [512, 100]), "fp32",
     r"test_resize = \[512, 100\]: \[short side, max side\]"),
    ("humanize-not-a-bool", _set("humanize", "yes"), "fp32", r"humanize = 'yes'"),
    ("output-stride", _set("output_stride", 8), "fp32", r"output_stride = 8: must be one of \[4\]"),
    ("unknown-key", _set("surprise", 1), "fp32", r"metadata = \['surprise'\]: unknown keys"),
    ("missing-key", _drop("gamma"), "fp32", r"metadata = \['gamma'\]: missing keys"),
    ("old-format-version", _set("format_version", 1), "fp32",
     r"format_version 1; this runtime reads 2"),
    ("graph-symlink-outside", _graph_symlink_outside, "fp32",
     r"image_encoder\.onnx: resolves to .* outside the export folder"),
    ("metadata-symlink-outside", _metadata_symlink_outside, "fp32",
     r"metadata\.json: resolves to .* outside the export folder"),
    ("external-data", _external_data, "fp32",
     r"image_encoder\.onnx: keeps tensor data in external files"),
]  # fmt: skip
# Through the CLI: one row per stage of the shared loading path (JSON, schema, file, graph).
CLI_ROWS = {"json-nested-200k", "tokenizer-hf-hub", "graph-symlink-outside", "int8-graph-as-fp32"}


def _tampered(trained: Trained, tmp_path: Path, tamper: Tamper) -> Path:
    folder = tmp_path / "export"
    _link_copy(trained.folder, folder)
    tamper(folder, trained.folder)
    return folder


@pytest.mark.parametrize(("tamper", "graph", "message"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])  # fmt: skip
def test_runtime_refuses_the_tampered_export(
    trained: Trained, tmp_path: Path, tamper: Tamper, graph: str, message: str
) -> None:
    folder = _tampered(trained, tmp_path, tamper)
    with pytest.raises(ExportError, match=message) as info:
        OnnxSegmenter(folder, graph=graph)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600


@pytest.mark.parametrize(("tamper", "graph", "message"),
                         [r[1:] for r in ROWS if r[0] in CLI_ROWS],
                         ids=[r[0] for r in ROWS if r[0] in CLI_ROWS])  # fmt: skip
def test_demo_cli_refuses_the_tampered_export_in_one_line(
    trained: Trained, tmp_path: Path, tamper: Tamper, graph: str, message: str
) -> None:
    folder = _tampered(trained, tmp_path, tamper)
    image = sorted((Path(trained.dataset) / "val2017").glob("*.jpg"))[0]
    out = tmp_path / "out"
    argv = [sys.executable, str(REPO / "tools" / "demo.py"), "--onnx", str(folder),
            "--onnx-graph", graph, "--input", str(image), "--output", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # start-up warnings are not refusals
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_web_demo_refuses_a_tampered_export_at_start_in_one_line(
    trained: Trained, tmp_path: Path
) -> None:
    from chimeraseg_test_utils import load_script

    tool = load_script("tools/web_demo.py", "chimeraseg_web_demo_tool_tampered")
    folder = _tampered(trained, tmp_path, _set("inference.slide_stride", [0, 40]))
    with pytest.raises(SystemExit, match=r"inference\.slide_stride\[0\] = 0") as info:
        tool.onnx_source(str(folder))
    assert "\n" not in str(info.value)
