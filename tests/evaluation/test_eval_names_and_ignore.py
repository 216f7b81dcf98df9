"""Name files have one reader (comments are not classes, duplicates are refused) and label sets
above 255 classes ignore 65535, so class 255 counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import load_script
from PIL import Image

from chimeraseg import IGNORE_LABEL, IGNORE_LABEL_16BIT, ignore_label_for
from chimeraseg.data.splits import check_distinct_class_names, read_class_names
from chimeraseg.evaluation.offline import evaluate_prediction_folder


def _pairs(root: Path, gt: np.ndarray, pred: np.ndarray) -> tuple[Path, Path]:
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    Image.fromarray(gt).save(gt_dir / "a.png")
    Image.fromarray(pred).save(pred_dir / "a.png")
    return gt_dir, pred_dir


def test_comment_lines_of_a_class_names_file_are_not_classes(tmp_path) -> None:
    gt = np.array([[0, 1], [2, 255]], np.uint8)
    gt_dir, pred_dir = _pairs(tmp_path, gt, np.array([[0, 1], [2, 0]], np.uint8))
    names = tmp_path / "names.txt"
    names.write_text("# my classes\nsky\n\n  # indented comment\nroad\ncat\n")
    out = tmp_path / "m.json"
    tool = load_script("tools/evaluate_predictions.py", "evaluate_predictions_names")
    tool.main(["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--vocabulary-file",
               str(names), "--unseen", "2", "--output", str(out)])  # fmt: skip
    record = json.loads(out.read_text())
    assert record["class_names"] == ["sky", "road", "cat"] and record["unseen_classes"] == [2]


def test_evaluate_predictions_never_writes_over_an_input(tmp_path) -> None:
    gt = np.array([[0, 1]], np.uint8)
    gt_dir, pred_dir = _pairs(tmp_path, gt, gt)
    names = tmp_path / "names.txt"
    names.write_text("sky\nroad\n")
    before = (gt_dir / "a.png").read_bytes()
    tool = load_script("tools/evaluate_predictions.py", "evaluate_predictions_inputs")
    base = ["--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--vocabulary-file", str(names)]
    with pytest.raises(SystemExit, match=r"output .*a\.png is one of the inputs"):
        tool.main([*base, "--output", str(gt_dir / "a.png")])
    with pytest.raises(SystemExit, match=r"names\.txt is one of the inputs"):
        tool.main([*base, "--output-plot", str(names)])
    assert (gt_dir / "a.png").read_bytes() == before and names.read_text() == "sky\nroad\n"


@pytest.mark.parametrize(
    ("names", "word"),
    [
        (["grass", "sky", "water", "grass"], "grass"),
        (["sofa, couch", "couch"], "couch"),
        (["Tree", "tree "], "tree"),
        (["traffic  light", "traffic light"], "traffic light"),
    ],
)
def test_a_name_given_twice_is_an_error_naming_it(names, word) -> None:
    with pytest.raises(ValueError, match=rf"--vocabulary: the name '{word}' is given twice"):
        check_distinct_class_names(names, "--vocabulary")


def test_name_file_with_a_duplicate_names_the_file(tmp_path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("cat\ndog\n# cat again below\ncat\n")
    with pytest.raises(ValueError, match=r"classes\.txt: the name 'cat' is given twice"):
        read_class_names(str(path))
    path.write_text("cat\nsofa, couch\n")
    assert read_class_names(str(path)) == ["cat", "sofa, couch"]


def test_ignore_value_follows_the_class_count() -> None:
    assert ignore_label_for(255) == IGNORE_LABEL and ignore_label_for(12) == IGNORE_LABEL
    assert ignore_label_for(256) == IGNORE_LABEL_16BIT and ignore_label_for(847) == 65535


def test_offline_evaluation_above_255_classes_counts_class_255(tmp_path) -> None:
    gt = np.array([[255, 255, 0], [300, 65535, 65535]], np.uint16)
    pred = np.array([[255, 255, 0], [300, 1, 2]], np.uint16)
    gt_dir, pred_dir = _pairs(tmp_path, gt, pred)
    conf, images = evaluate_prediction_folder(str(pred_dir), str(gt_dir), 301)
    assert images == 1 and conf.sum() == 4  # the two 65535 pixels are ignored
    assert conf[255, 255] == 2 and conf[0, 0] == 1 and conf[300, 300] == 1
