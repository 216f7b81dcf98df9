"""tools/evaluate_predictions.py: folder of prediction PNGs vs ground truth, no detectron2."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chimeraseg.evaluation.metrics import confusion_matrix, zero_shot_metrics

TOOL = Path(__file__).resolve().parents[2] / "tools" / "evaluate_predictions.py"
NAMES = ["sky", "road", "cat", "dog"]


def _load_tool():
    spec = importlib.util.spec_from_file_location("evaluate_predictions", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_pairs(root: Path, count: int = 3) -> tuple[Path, Path, np.ndarray]:
    """GT and prediction PNGs in ``root/gt`` and ``root/pred``; returns the expected confusion."""
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    conf = np.zeros((len(NAMES), len(NAMES)), np.int64)
    for i in range(count):
        gt = rng.integers(0, 3, size=(7 + i, 10)).astype(np.uint8)  # "dog" has no ground truth
        gt[0] = 255
        pred = rng.integers(0, len(NAMES), size=gt.shape).astype(np.uint8)
        Image.fromarray(gt).save(gt_dir / f"img_{i}.png")
        Image.fromarray(pred).save(pred_dir / f"img_{i}.png")
        conf += confusion_matrix(pred, gt, len(NAMES))
    return gt_dir, pred_dir, conf


@pytest.fixture
def names_file(tmp_path: Path) -> Path:
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES) + "\n")
    return path


def test_tool_reports_the_metrics_of_the_folder(tmp_path, names_file, capsys):
    gt_dir, pred_dir, conf = _write_pairs(tmp_path)
    out = tmp_path / "m.json"
    plot = tmp_path / "iou.png"
    metrics = _load_tool().main(
        ["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--vocabulary-file",
         str(names_file), "--unseen", "2,3", "--output-json", str(out), "--output-plot", str(plot)]
    )  # fmt: skip
    expected = zero_shot_metrics(conf, [0, 1], [2, 3], NAMES)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, nan_ok=True), key
    saved = json.loads(out.read_text())  # strict JSON: NaN stored as null
    assert saved["num_images"] == 3 and saved["unseen_classes"] == [2, 3]
    assert saved["metrics"]["IoU-dog"] is None and math.isnan(metrics["IoU-dog"])
    assert saved["metrics"]["hIoU"] == pytest.approx(expected["hIoU"])
    assert np.array_equal(np.array(saved["confusion_matrix"]), conf)
    printed = capsys.readouterr().out
    assert "hIoU" in printed and "unseen" in printed and "cat" in printed
    assert Image.open(plot).size[0] > 100


def test_tool_uses_a_named_split(tmp_path):
    from chimeraseg.data.splits import get_split

    split = get_split("voc_20")
    rng = np.random.default_rng(1)
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
    gt = rng.integers(0, 20, size=(8, 8)).astype(np.uint8)
    Image.fromarray(gt).save(tmp_path / "gt" / "a.png")
    Image.fromarray(gt).save(tmp_path / "pred" / "a.png")  # perfect prediction
    metrics = _load_tool().main(
        ["--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt"),
         "--split", "voc_20"]
    )  # fmt: skip
    assert metrics["hIoU"] == pytest.approx(100.0)
    assert set(f"IoU-{n}" for n in split.class_names) <= set(metrics)
    assert (tmp_path / "pred" / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ("missing", r"1 of 3 ground-truth files have no prediction .*img_1\.png"),
        ("size", r"prediction shape \(8, 10\) != ground-truth shape \(9, 10\) in .*img_2\.png"),
        ("range", r"prediction class ids \[9\] are outside \[0, 4\) in .*img_0\.png"),
        ("gt_range", r"img_1\.png has values \{7\}"),
        ("empty", r"no '\*\.png' ground-truth files"),
    ],
)
def test_tool_errors_name_the_file(tmp_path, names_file, corrupt, message):
    gt_dir, pred_dir, _ = _write_pairs(tmp_path)
    if corrupt == "missing":
        (pred_dir / "img_1.png").unlink()
    elif corrupt == "size":
        Image.fromarray(np.zeros((8, 10), np.uint8)).save(pred_dir / "img_2.png")
    elif corrupt == "range":
        Image.fromarray(np.full((7, 10), 9, np.uint8)).save(pred_dir / "img_0.png")
    elif corrupt == "gt_range":
        Image.fromarray(np.full((8, 10), 7, np.uint8)).save(gt_dir / "img_1.png")
    else:
        for f in gt_dir.iterdir():
            f.unlink()
    args = ["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir),
            "--vocabulary-file", str(names_file)]  # fmt: skip
    with pytest.raises(ValueError, match=message):
        _load_tool().main(args)


def test_tool_command_line_exits_with_one_clear_line(tmp_path, names_file):
    gt_dir, pred_dir, _ = _write_pairs(tmp_path)
    (pred_dir / "img_0.png").unlink()
    result = subprocess.run(
        [sys.executable, str(TOOL), "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir),
         "--vocabulary-file", str(names_file), "--unseen", "5"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--unseen ids [5] are outside [0, 4)" in result.stderr
    assert "Traceback" not in result.stderr
