"""Confusion matrix and zero-shot metrics against brute-force per-pixel / per-class computations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from chimeraseg.evaluation.metrics import (
    confusion_matrix,
    harmonic_mean,
    per_class_iou,
    zero_shot_metrics,
)

N = 6
NAMES = [f"c{i}" for i in range(N)]


def _random_maps(rng: np.random.Generator, shape=(2, 17, 13)) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and ground truth where class 4 never appears in the ground truth but is
    predicted, class 5 appears nowhere, and ~15% of the pixels are ignore."""
    gt = rng.integers(0, 4, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.15] = 255
    pred = rng.integers(0, 5, size=shape).astype(np.int64)
    return pred, gt


def _brute_confusion(pred: np.ndarray, gt: np.ndarray, n: int) -> np.ndarray:
    conf = np.zeros((n, n), dtype=np.int64)
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if g != 255:
            conf[g, p] += 1
    return conf


def _brute_class_stats(pred: np.ndarray, gt: np.ndarray, c: int) -> tuple[int, int, int]:
    labelled = gt != 255
    tp = int(((pred == c) & (gt == c)).sum())
    fp = int(((pred == c) & (gt != c) & labelled).sum())
    fn = int(((pred != c) & (gt == c)).sum())
    return tp, fp, fn


def test_confusion_matrix_matches_brute_force_numpy_and_torch():
    rng = np.random.default_rng(0)
    pred, gt = _random_maps(rng)
    expected = _brute_confusion(pred, gt, N)
    conf_np = confusion_matrix(pred, gt, N)
    conf_t = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), N)
    assert isinstance(conf_np, np.ndarray) and conf_np.dtype == np.int64
    assert conf_t.dtype == torch.int64 and conf_t.shape == (N, N)
    np.testing.assert_array_equal(conf_np, expected)
    np.testing.assert_array_equal(conf_t.numpy(), expected)
    # Rows are ground truth: class 4 is predicted but has no ground truth -> empty row, full column.
    assert conf_np[4].sum() == 0 and conf_np[:, 4].sum() > 0
    assert conf_np.sum() == (gt != 255).sum()


def test_confusion_matrix_mixed_tensor_and_array():
    rng = np.random.default_rng(1)
    pred, gt = _random_maps(rng)
    conf = confusion_matrix(torch.from_numpy(pred), gt, N)
    np.testing.assert_array_equal(conf.numpy(), _brute_confusion(pred, gt, N))


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (np.zeros((2, 3), np.int64), np.zeros((3, 2), np.uint8), r"shape \(2, 3\) != .*\(3, 2\)"),
        (np.array([[0, 7, 9]]), np.array([[0, 1, 2]]), r"prediction class ids \[7, 9\]"),
        (np.array([[0, -1, 1]]), np.array([[0, 1, 2]]), r"prediction class ids \[-1\]"),
        (
            np.array([[0, 1, 2]]),
            np.array([[0, 6, 255]]),
            r"ground truth class ids \[6\] are outside \[0, 6\) or 255",
        ),
        (np.array([[0.0, 1.0]]), np.array([[0, 1]]), "integer class ids"),
    ],
)
def test_confusion_matrix_rejects_bad_input_naming_values_and_file(pred, gt, message):
    with pytest.raises(ValueError, match=message) as info:
        confusion_matrix(pred, gt, N, source="val/img_0001.png")
    assert "val/img_0001.png" in str(info.value)


def test_zero_shot_metrics_match_brute_force_per_class():
    rng = np.random.default_rng(2)
    pred, gt = _random_maps(rng)
    seen, unseen = [0, 1, 4], [2, 3, 5]
    res = zero_shot_metrics(confusion_matrix(pred, gt, N), seen, unseen, NAMES)
    labelled = (gt != 255).sum()
    ious, accs, weights = {}, {}, {}
    for c in range(N):
        tp, fp, fn = _brute_class_stats(pred, gt, c)
        if tp + fn == 0:  # no ground truth: NaN, left out of every mean
            assert math.isnan(res[f"IoU-c{c}"]) and math.isnan(res[f"ACC-c{c}"])
            continue
        ious[c], accs[c], weights[c] = tp / (tp + fp + fn), tp / (tp + fn), (tp + fn) / labelled
        assert res[f"IoU-c{c}"] == pytest.approx(100 * ious[c])
        assert res[f"ACC-c{c}"] == pytest.approx(100 * accs[c])
    assert sorted(ious) == [0, 1, 2, 3]  # 4 (predicted only) and 5 (absent) are excluded
    assert res["mIoU"] == pytest.approx(100 * np.mean(list(ious.values())))
    assert res["mACC"] == pytest.approx(100 * np.mean(list(accs.values())))
    assert res["fwIoU"] == pytest.approx(100 * sum(ious[c] * weights[c] for c in ious))
    assert res["pACC"] == pytest.approx(100 * ((pred == gt) & (gt != 255)).sum() / labelled)
    s, u = np.mean([ious[0], ious[1]]), np.mean([ious[2], ious[3]])
    assert res["sIoU"] == pytest.approx(100 * s)
    assert res["uIoU"] == pytest.approx(100 * u)
    assert res["hIoU"] == pytest.approx(100 * 2 * s * u / (s + u))


def test_false_positives_of_a_class_without_ground_truth_still_count():
    """Predicting class 2 (absent from the ground truth) lowers class 0's IoU, 2 stays NaN."""
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 1]])
    res = zero_shot_metrics(confusion_matrix(pred, gt, 3), [0, 1], [2], ["a", "b", "c"])
    assert res["IoU-a"] == pytest.approx(50.0) and res["IoU-b"] == pytest.approx(100.0)
    assert math.isnan(res["IoU-c"]) and math.isnan(res["uIoU"]) and math.isnan(res["hIoU"])
    assert res["mIoU"] == pytest.approx(75.0)


def test_hiou_edge_cases():
    names = ["s", "u"]
    # u = 0: the unseen class has ground truth but is never predicted correctly -> hIoU = 0.
    res = zero_shot_metrics(np.array([[5, 0], [3, 0]]), [0], [1], names)
    assert res["uIoU"] == 0.0 and res["hIoU"] == 0.0 and res["sIoU"] == pytest.approx(62.5)
    # s = u = 0 -> hIoU = 0 (not NaN).
    res = zero_shot_metrics(np.array([[0, 4], [2, 0]]), [0], [1], names)
    assert res["sIoU"] == 0.0 and res["uIoU"] == 0.0 and res["hIoU"] == 0.0
    # No unseen ground truth at all -> uIoU and hIoU NaN: the split was not evaluated.
    res = zero_shot_metrics(np.array([[4, 1], [0, 0]]), [0], [1], names)
    assert math.isnan(res["uIoU"]) and math.isnan(res["hIoU"])
    # An empty unseen set (e.g. ADE-150 transfer) behaves the same.
    res = zero_shot_metrics(np.array([[4, 1], [0, 3]]), [0, 1], [], names)
    assert math.isnan(res["uIoU"]) and math.isnan(res["hIoU"])
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(0.5, 0.5) == pytest.approx(0.5)


def test_per_class_iou_accepts_tensors():
    conf = torch.tensor([[3, 1], [0, 0]])
    iou, acc = per_class_iou(conf)
    assert iou[0] == pytest.approx(0.75) and acc[0] == pytest.approx(0.75)
    assert np.isnan(iou[1]) and np.isnan(acc[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_names": ["a"]}, "1 class names for a 2x2"),
        ({"seen_ids": [0, 1]}, r"\[1\] are listed as both seen and unseen"),
        ({"unseen_ids": [2]}, r"unseen_ids \[2\] are outside \[0, 2\)"),
        ({"seen_ids": [5]}, r"^seen_ids \[5\] are outside \[0, 2\)$"),
        (
            {"conf": np.zeros((2, 2), np.int64)},
            r"^the confusion matrix is empty: no labelled \(non-ignore\) pixel evaluated$",
        ),
        ({"conf": np.zeros((2, 3), np.int64)}, "square"),
    ],
)
def test_zero_shot_metrics_rejects_bad_input(kwargs, message):
    args = {"conf": np.eye(2, dtype=np.int64), "seen_ids": [0], "unseen_ids": [1]}
    args["class_names"] = ["a", "b"]
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        zero_shot_metrics(**args)


def test_class_with_a_single_ground_truth_pixel_is_evaluated():
    """One ground-truth pixel is enough for a class to get an IoU and an accuracy."""
    # class 0: TP 3, FN 1, FP 1 -> IoU 3/5; class 1: its one pixel predicted as 0 -> IoU 0
    iou, acc = per_class_iou(np.array([[3, 1], [1, 0]]))
    np.testing.assert_allclose(iou, [0.6, 0.0])
    np.testing.assert_allclose(acc, [0.75, 0.0])
    # class 1: its one pixel predicted correctly -> IoU 1
    iou, acc = per_class_iou(np.array([[2, 0], [0, 1]]))
    np.testing.assert_allclose(iou, [1.0, 1.0])
    np.testing.assert_allclose(acc, [1.0, 1.0])


def test_empty_seen_set_leaves_seen_and_harmonic_iou_nan():
    """With no seen class (all unseen), sIoU and hIoU are NaN and uIoU is the plain mean."""
    res = zero_shot_metrics(np.array([[4, 1], [0, 3]]), [], [0, 1], ["a", "b"])
    assert math.isnan(res["sIoU"]) and math.isnan(res["hIoU"])
    assert res["uIoU"] == pytest.approx(100 * (4 / 5 + 3 / 4) / 2)


def test_empty_split_is_nan_without_numpy_warnings():
    """An empty unseen set yields NaN quietly: no 'mean of empty slice' RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = zero_shot_metrics(np.array([[4, 1], [0, 3]]), [0, 1], [], ["a", "b"])
    assert math.isnan(res["uIoU"]) and math.isnan(res["hIoU"])
    assert res["sIoU"] == pytest.approx(77.5)


def test_harmonic_mean_propagates_nan_from_either_side():
    """A NaN split mean makes hIoU NaN whichever side it is on."""
    assert math.isnan(harmonic_mean(math.nan, 0.5)) and math.isnan(harmonic_mean(0.0, math.nan))
    assert harmonic_mean(0.2, 0.6) == pytest.approx(2 * 0.2 * 0.6 / 0.8)


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (
            np.zeros((2, 3), np.int64),
            np.zeros((3, 2), np.uint8),
            r"^prediction shape \(2, 3\) != ground-truth shape \(3, 2\)$",
        ),
        (
            np.array([[0, 7, 9]]),
            np.array([[0, 1, 2]]),
            r"^prediction class ids \[7, 9\] are "
            r"outside \[0, 6\)$",
        ),
        (
            np.arange(20).reshape(1, 20),
            np.zeros((1, 20), np.uint8),
            r"^prediction class ids \[6, 7, 8, 9, 10, 11, 12, 13, 14, 15\] are outside \[0, 6\)$",
        ),
    ],
)
def test_error_messages_without_a_source_end_at_the_values(pred, gt, message):
    """Without a file name the message names the values (at most ten) and nothing else."""
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, gt, N)
