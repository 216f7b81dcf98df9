"""Pixel agreement of two prediction folders (deployed vs. PyTorch) and demo-named predictions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chimeraseg.evaluation.offline import evaluate_prediction_folder, prediction_agreement

TOOL = Path(__file__).resolve().parents[2] / "tools" / "evaluate_predictions.py"
NUM_CLASSES = 4


def _tool():
    spec = importlib.util.spec_from_file_location("evaluate_predictions", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folders(root: Path, flip: int) -> tuple[Path, Path, Path, int]:
    """gt/, ref/ and pred/ (demo names ``<stem>_labels.png``); ``pred`` differs from ``ref`` on
    ``flip`` labelled pixels and on every ignored one. Returns the labelled-pixel count."""
    rng = np.random.default_rng(1)
    dirs = [root / name for name in ("gt", "ref", "pred")]
    for d in dirs:
        d.mkdir()
    labelled = 0
    for i in range(2):
        gt = rng.integers(0, NUM_CLASSES, size=(6, 9)).astype(np.uint8)
        gt[0] = 255  # ignored row: disagreements there must not count
        ref = rng.integers(0, NUM_CLASSES, size=gt.shape).astype(np.uint8)
        pred = ref.copy()
        pred[0] = (ref[0] + 1) % NUM_CLASSES
        if i == 0:
            pred.reshape(-1)[gt.size - flip :] = (pred.reshape(-1)[gt.size - flip :] + 1) % 4
        Image.fromarray(gt).save(dirs[0] / f"im{i}.png")
        Image.fromarray(ref).save(dirs[1] / f"im{i}_labels.png")
        Image.fromarray(pred).save(dirs[2] / f"im{i}_labels.png")
        labelled += int((gt != 255).sum())
    return *dirs, labelled


def test_agreement_counts_only_labelled_pixels(tmp_path):
    gt, ref, pred, labelled = _folders(tmp_path, flip=5)
    assert prediction_agreement(str(pred), str(ref), str(gt), NUM_CLASSES, "_labels") == (
        labelled - 5,
        labelled,
    )
    assert prediction_agreement(str(ref), str(ref), str(gt), NUM_CLASSES, "_labels") == (
        labelled,
        labelled,
    )


def test_suffix_pairs_demo_labels_with_ground_truth(tmp_path):
    gt, ref, _, labelled = _folders(tmp_path, flip=0)
    conf, count = evaluate_prediction_folder(str(ref), str(gt), NUM_CLASSES, "_labels")
    assert (count, int(conf.sum())) == (2, labelled)
    with pytest.raises(ValueError, match=r"im0\.png"):  # without the suffix nothing matches
        evaluate_prediction_folder(str(ref), str(gt), NUM_CLASSES)


def test_size_mismatch_and_missing_reference_name_the_file(tmp_path):
    gt, ref, pred, _ = _folders(tmp_path, flip=0)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(ref / "im1_labels.png")
    with pytest.raises(ValueError, match=r"im1_labels\.png is 3x3 .* is 9x6"):
        prediction_agreement(str(pred), str(ref), str(gt), NUM_CLASSES, "_labels")
    (ref / "im1_labels.png").unlink()
    with pytest.raises(ValueError, match=r"not found: .*ref.im1_labels\.png"):
        prediction_agreement(str(pred), str(ref), str(gt), NUM_CLASSES, "_labels")


def test_tool_writes_agreement_and_refuses_overwriting_the_reference(tmp_path, capsys):
    gt, ref, pred, labelled = _folders(tmp_path, flip=3)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\nd\n")
    common = ["--pred-dir", str(pred), "--gt-dir", str(gt), "--pred-suffix", "_labels",
              "--reference-dir", str(ref), "--vocabulary-file", str(names),
              "--unseen", "3"]  # fmt: skip
    out = tmp_path / "m.json"
    _tool().main([*common, "--output", str(out)])
    report = json.loads(out.read_text())
    assert (report["agreeing_pixels"], report["labelled_pixels"]) == (labelled - 3, labelled)
    assert report["agreement"] == pytest.approx((labelled - 3) / labelled)
    assert "agreement with" in capsys.readouterr().out
    before = (ref / "im0_labels.png").read_bytes()
    with pytest.raises(SystemExit, match="im0_labels.png is one of the inputs"):
        _tool().main([*common, "--output", str(ref / "im0_labels.png")])
    assert (ref / "im0_labels.png").read_bytes() == before
