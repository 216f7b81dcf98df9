"""ZeroShotSemSegEvaluator against detectron2's SemSegEvaluator on a tiny registered dataset."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.detectron2

N, UNSEEN, SEEN = 5, [1, 4], [0, 2, 3]
NAMES = ["sky", "cow", "road", "tree-merged", "cat"]


@pytest.fixture
def dataset(tmp_path: Path):
    """Four GT PNGs of different sizes (class 4 never in the GT, some ignore pixels) + logits."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    records, logits = [], []
    for i in range(4):
        h, w = 12 + 2 * i, 16 - i
        gt = rng.integers(0, 4, size=(h, w)).astype(np.uint8)
        gt[: 2 + i, :3] = 255
        path = tmp_path / f"gt_{i}.png"
        Image.fromarray(gt).save(path)
        records.append({"file_name": str(tmp_path / f"img_{i}.jpg"), "sem_seg_file_name": str(path),
                        "height": h, "width": w, "image_id": i})  # fmt: skip
        logits.append(torch.randn(N, h, w, generator=gen) * 2)
    name = f"zs_test_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=NAMES, seen_classes=SEEN, unseen_classes=UNSEEN, ignore_label=255,
        evaluator_type="zs_sem_seg",
    )  # fmt: skip
    yield name, records, logits
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _bias(logits: torch.Tensor, gamma: float) -> torch.Tensor:
    biased = logits.clone()
    biased[UNSEEN] += gamma
    return biased


def _run(evaluator, records, logits, keep_gt_key: bool = True):
    evaluator.reset()
    for rec, lg in zip(records, logits):
        inp = dict(rec) if keep_gt_key else {"file_name": rec["file_name"]}
        evaluator.process([inp], [{"sem_seg": lg}])
    return evaluator.evaluate()["sem_seg"]


@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_metrics_equal_detectron2_sem_seg_evaluator(dataset, gamma):
    from detectron2.evaluation import SemSegEvaluator

    from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator

    name, records, logits = dataset
    ours = _run(ZeroShotSemSegEvaluator(name, gamma=gamma), records, logits)
    theirs = _run(SemSegEvaluator(name), records, [_bias(lg, gamma) for lg in logits])
    assert math.isnan(ours["IoU-cat"]) and math.isnan(theirs["IoU-cat"])  # predicted, no GT
    keys = ["mIoU", "fwIoU", "mACC", "pACC"] + [f"{m}-{n}" for m in ("IoU", "ACC") for n in NAMES]
    for key in keys:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9, nan_ok=True), key
    seen = np.nanmean([ours[f"IoU-{NAMES[i]}"] for i in SEEN])
    assert ours["sIoU"] == pytest.approx(seen) and ours["uIoU"] == pytest.approx(ours["IoU-cow"])


def test_sweep_values_equal_separate_evaluations(dataset):
    from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator

    name, records, logits = dataset
    swept = _run(ZeroShotSemSegEvaluator(name, gamma=0.5, gamma_sweep=[0.0, 1.5]), records, logits)
    assert swept["gamma"] == 0.5
    for g in (0.0, 0.5, 1.5):
        single = _run(ZeroShotSemSegEvaluator(name, gamma=g, gamma_sweep=[]), records, logits)
        for metric in ("sIoU", "uIoU", "hIoU", "mIoU"):
            assert swept[f"{metric}@gamma={g:.2f}"] == pytest.approx(single[metric], nan_ok=True)
    assert swept["hIoU"] == swept["hIoU@gamma=0.50"]


def test_outputs_written_and_gt_found_without_sem_seg_file_name(dataset, tmp_path):
    from detectron2.evaluation.testing import print_csv_format

    from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator
    from chimeraseg.evaluation.metrics import zero_shot_metrics
    from chimeraseg.evaluation.offline import evaluate_prediction_folder

    name, records, logits = dataset
    out = tmp_path / "eval"
    evaluator = ZeroShotSemSegEvaluator(name, output_dir=str(out), gamma=0.3,
                                        write_predictions=True)  # fmt: skip
    res = _run(evaluator, records, logits, keep_gt_key=False)  # detectron2's mapper drops the key
    print_csv_format({"sem_seg": res})
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["num_images"] == 4 and saved["gamma"] == 0.3
    assert [row["gamma"] for row in saved["sweep"]] == sorted(
        {round(0.1 * i, 1) for i in range(11)} | {0.3}
    )
    assert saved["headline"]["hIoU"] == pytest.approx(res["hIoU"])
    for png in ("per_class_iou.png", "gamma_sweep.png"):
        assert Image.open(out / png).size[0] > 100
    # Prediction PNGs (headline γ) re-evaluated offline reproduce the headline metrics.
    conf, count = evaluate_prediction_folder(str(out / "predictions"), str(tmp_path), N)
    offline = zero_shot_metrics(conf, SEEN, UNSEEN, NAMES)
    assert count == 4
    for key in ("mIoU", "sIoU", "uIoU", "hIoU", "pACC"):
        assert offline[key] == pytest.approx(res[key]), key


def test_max_predictions_limits_written_files(dataset, tmp_path):
    from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator

    name, records, logits = dataset
    evaluator = ZeroShotSemSegEvaluator(name, output_dir=str(tmp_path / "o"),
                                        write_predictions=True, max_predictions=2)  # fmt: skip
    _run(evaluator, records, logits)
    assert len(list((tmp_path / "o" / "predictions").glob("*.png"))) == 2


def test_bad_inputs_raise_clear_errors(dataset):
    from detectron2.data import MetadataCatalog

    from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator

    name, records, logits = dataset
    evaluator = ZeroShotSemSegEvaluator(name)
    evaluator.reset()
    with pytest.raises(ValueError, match=r"ground-truth shape \(12, 16\) != .*\(12, 15\).*gt_0"):
        evaluator.process([records[0]], [{"sem_seg": logits[0][:, :, :15]}])
    with pytest.raises(ValueError, match="logits have 4 classes, the dataset has 5 for .*gt_0"):
        evaluator.process([records[0]], [{"sem_seg": logits[0][:4]}])
    with pytest.raises(KeyError, match="'nope.jpg' has no 'sem_seg_file_name'"):
        evaluator.process([{"file_name": "nope.jpg"}], [{"sem_seg": logits[0]}])
    with pytest.raises(ValueError, match="no image of dataset"):
        evaluator.evaluate()
    with pytest.raises(ValueError, match="needs an output_dir"):
        ZeroShotSemSegEvaluator(name, write_predictions=True)
    MetadataCatalog.get("zs_no_meta").set(stuff_classes=NAMES)
    with pytest.raises(KeyError, match=r"'zs_no_meta' has no metadata \['seen_classes'"):
        ZeroShotSemSegEvaluator("zs_no_meta")
    MetadataCatalog.remove("zs_no_meta")
