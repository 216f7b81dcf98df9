"""Offline evaluation of a folder of prediction PNGs against prepared ground-truth PNGs.

No model and no detectron2: predictions are label maps (class ids ``0..N-1``) named like the
ground-truth files, e.g. written by ``ZeroShotSemSegEvaluator(write_predictions=True)``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from chimeraseg import ignore_label_for
from chimeraseg.data.io import read_label
from chimeraseg.evaluation.metrics import check_class_ids, confusion_matrix

__all__ = [
    "read_prediction",
    "match_prediction_files",
    "evaluate_prediction_folder",
    "prediction_agreement",
]

logger = logging.getLogger(__name__)


def read_prediction(path: str, num_classes: int) -> np.ndarray:
    """Reads a prediction PNG (mode ``L``, ``P``, ``I;16`` or ``I``) as ``(H, W)`` int64 ids.

    Raises:
        ValueError: the file is missing or unreadable, has several channels, or holds ids
            outside ``[0, N)``; the message names the file.
    """
    if not os.path.isfile(path):
        raise ValueError(f"prediction file not found: {path}")
    try:
        with Image.open(path) as img:
            mode = img.mode
            pred = np.asarray(img).astype(np.int64)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"cannot read prediction file {path}: {e}") from e
    if pred.ndim != 2:
        raise ValueError(f"prediction file {path} has mode {mode!r}; expected a single channel")
    check_class_ids(pred, num_classes, what="prediction", source=path)
    return pred


def match_prediction_files(
    pred_dir: str, gt_dir: str, ext: str = ".png", pred_suffix: str = ""
) -> list[tuple[str, str]]:
    """Pairs every ground-truth ``<stem><ext>`` in ``gt_dir`` with ``<stem><pred_suffix><ext>``.

    Args:
        pred_dir: folder of predictions.
        gt_dir: folder of ground-truth label PNGs.
        ext: file extension of both.
        pred_suffix: what the prediction names add to the ground-truth stem, e.g. ``"_labels"``
            for the ``<stem>_labels.png`` of ``tools/demo.py --save-labels``.

    Returns:
        Sorted ``(prediction path, ground-truth path)`` pairs.

    Raises:
        ValueError: a directory is missing, ``gt_dir`` holds no ``*<ext>``, or predictions are
            missing (up to five of the missing names are listed).
    """
    for what, d in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not os.path.isdir(d):
            raise ValueError(f"{what} directory not found: {d}")
    gt_names = sorted(f for f in os.listdir(gt_dir) if f.endswith(ext))
    if not gt_names:
        raise ValueError(f"no '*{ext}' ground-truth files in {gt_dir}: nothing to evaluate")
    pred_name = {f: f[: -len(ext)] + pred_suffix + ext for f in gt_names}
    pred_names = {f for f in os.listdir(pred_dir) if f.endswith(pred_suffix + ext)}
    missing = [pred_name[f] for f in gt_names if pred_name[f] not in pred_names]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(gt_names)} ground-truth files have no prediction in "
            f"{pred_dir}, e.g. {missing[:5]}"
        )
    extra = pred_names.difference(pred_name.values())
    if extra:
        logger.warning("%d predictions in %s have no ground truth and are skipped, e.g. %s",
                       len(extra), pred_dir, sorted(extra)[:5])  # fmt: skip
    return [(os.path.join(pred_dir, pred_name[f]), os.path.join(gt_dir, f)) for f in gt_names]


def evaluate_prediction_folder(
    pred_dir: str, gt_dir: str, num_classes: int, pred_suffix: str = ""
) -> tuple[np.ndarray, int]:
    """Accumulates the confusion matrix of every prediction/ground-truth pair.

    Args:
        pred_dir: folder of prediction PNGs named like the ground-truth files.
        gt_dir: folder of prepared ground-truth PNGs (ids ``0..N-1``; ignore 255, or 65535 for
            more than 255 classes: :func:`chimeraseg.ignore_label_for`).
        num_classes: ``N``.
        pred_suffix: see :func:`match_prediction_files`.

    Returns:
        ``(conf, num_images)``: ``(N, N)`` int64, rows = ground truth, columns = prediction.

    Raises:
        ValueError: missing/unreadable files, size mismatch or ids out of range (naming the file).
    """
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    pairs = match_prediction_files(pred_dir, gt_dir, pred_suffix=pred_suffix)
    ignore = ignore_label_for(num_classes)  # class 255 is a class above 255 classes
    for pred_path, gt_path in pairs:
        gt = read_label(gt_path, num_classes, ignore_label=ignore)
        pred = read_prediction(pred_path, num_classes)
        conf += confusion_matrix(pred, gt, num_classes, ignore, source=pred_path)
    return conf, len(pairs)


def prediction_agreement(
    pred_dir: str, reference_dir: str, gt_dir: str, num_classes: int, pred_suffix: str = ""
) -> tuple[int, int]:
    """Counts the labelled pixels where two folders of predictions give the same class.

    Used to compare a deployed model (e.g. the ONNX runtime) with the PyTorch model on the
    images of a split: both folders are named as :func:`match_prediction_files` describes, and
    only pixels whose ground truth is not the ignore label count.

    Args:
        pred_dir: folder of the predictions under test.
        reference_dir: folder of the reference predictions, named like ``pred_dir``'s.
        gt_dir: folder of prepared ground-truth PNGs: which pixels are labelled.
        num_classes: ``N``.
        pred_suffix: see :func:`match_prediction_files`.

    Returns:
        ``(agreeing, labelled)`` pixel counts; the agreement is their ratio.

    Raises:
        ValueError: missing/unreadable files, ids out of range, or a prediction whose size
            differs from its ground truth's (naming the file).
    """
    ignore = ignore_label_for(num_classes)
    agreeing = labelled = 0
    for pred_path, gt_path in match_prediction_files(pred_dir, gt_dir, pred_suffix=pred_suffix):
        ref_path = os.path.join(reference_dir, os.path.basename(pred_path))
        valid = read_label(gt_path, num_classes, ignore_label=ignore) != ignore  # (H, W)
        pred, ref = (read_prediction(p, num_classes) for p in (pred_path, ref_path))
        for path, labels in ((pred_path, pred), (ref_path, ref)):
            if labels.shape != valid.shape:
                raise ValueError(
                    f"prediction {path} is {labels.shape[1]}x{labels.shape[0]} but its ground "
                    f"truth {gt_path} is {valid.shape[1]}x{valid.shape[0]}"
                )
        agreeing += int((pred == ref)[valid].sum())
        labelled += int(valid.sum())
    return agreeing, labelled
