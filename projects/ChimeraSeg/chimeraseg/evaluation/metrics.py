"""Confusion matrices and the generalized zero-shot metrics (sIoU, uIoU, hIoU, mIoU, ...).

Conventions (paper eq. 7; docs/METHOD.md, 'Metrics'), fixed here once for the whole project:

* A confusion matrix ``conf`` is ``(N, N)`` int64 with **rows = ground truth, columns =
  prediction**: ``conf[g, p]`` counts pixels of ground-truth class ``g`` predicted as ``p``.
  Ignore pixels (ground truth == ``ignore``) are not counted. (detectron2's ``SemSegEvaluator``
  stores the transpose, ``[pred, gt]``, plus an ignore row/column; the numbers are the same.)
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` is defined only for classes with ground-truth pixels;
  a class without ground truth has IoU and accuracy NaN (even when it was predicted: its false
  positives still lower the IoU of the classes whose pixels they took) and is left out of
  every mean. This is detectron2's ``SemSegEvaluator`` convention, so numbers are comparable.
* ``mIoU`` = mean IoU over classes with ground truth; ``fwIoU`` = sum of IoU_c weighted by the
  ground-truth pixel frequency of c; ``mACC`` = mean over classes with ground truth of
  ``TP_c / GT_c``; ``pACC`` = ``sum TP / sum GT``.
* ``sIoU`` / ``uIoU`` = mean IoU over the seen / unseen classes that have ground truth;
  ``hIoU = 2 s u / (s + u)``, 0 when ``s + u == 0``. If the seen (or unseen) set has no class with
  ground truth at all, that mean is NaN and so is ``hIoU``: the split was not evaluated.
* Everything is reported in percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]

__all__ = [
    "check_class_ids",
    "confusion_matrix",
    "per_class_iou",
    "zero_shot_metrics",
    "harmonic_mean",
]


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def _sample_values(values: ArrayLike, limit: int = 10) -> list[int]:
    """Up to ``limit`` distinct offending values, as Python ints, for error messages."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return [int(v) for v in np.unique(values)[:limit]]


def check_class_ids(
    values: ArrayLike,
    num_classes: int,
    *,
    what: str,
    ignore: int | None = None,
    source: str | None = None,
) -> None:
    """Raises ``ValueError`` unless ``values`` are integer ids in ``[0, N)`` (or ``ignore``).

    Args:
        values: ``(...)`` integer class-id map (tensor or ndarray).
        num_classes: ``N``.
        what: name used in the message, e.g. ``"prediction"`` or ``"ground truth"``.
        ignore: a value that is allowed besides ``[0, N)``, or None.
        source: optional file name quoted in the message.
    """
    is_float = (
        values.is_floating_point()
        if isinstance(values, torch.Tensor)
        else not np.issubdtype(values.dtype, np.integer)
    )
    if is_float:
        raise ValueError(
            f"{what} must hold integer class ids, got dtype {values.dtype}{_where(source)}"
        )
    bad = (values < 0) | (values >= num_classes)
    if ignore is not None:
        bad &= values != ignore
    if bad.any():
        allowed = f"[0, {num_classes})" + (f" or {ignore}" if ignore is not None else "")
        raise ValueError(
            f"{what} class ids {_sample_values(values[bad])} are outside {allowed}{_where(source)}"
        )


def _check_inputs(
    pred: ArrayLike, gt: ArrayLike, num_classes: int, ignore: int, source: str | None
) -> None:
    """Raises ``ValueError`` on shape mismatch, non-integer maps or class ids out of range."""
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(gt.shape)}"
            f"{_where(source)}"
        )
    check_class_ids(pred, num_classes, what="prediction", source=source)
    check_class_ids(gt, num_classes, what="ground truth", ignore=ignore, source=source)


def confusion_matrix(
    pred: ArrayLike,
    gt: ArrayLike,
    num_classes: int,
    ignore: int = 255,
    *,
    source: str | None = None,
) -> ArrayLike:
    """Counts (ground truth, prediction) pairs with one ``bincount`` of ``gt * N + pred``.

    Works on torch tensors (on their device, CPU or GPU) and on NumPy arrays.

    Args:
        pred: ``(...)`` integer predicted class ids in ``[0, N)``.
        gt: ``(...)`` integer ground-truth class ids in ``[0, N)`` or ``ignore``; same shape.
        num_classes: ``N``.
        ignore: ground-truth value whose pixels are not counted.
        source: optional file name (or other origin) quoted in error messages.

    Returns:
        ``(N, N)`` int64 confusion matrix, **rows = ground truth, columns = prediction**, of the
        same kind (tensor on the same device, or ndarray) as the inputs.

    Raises:
        ValueError: shapes differ, a map is not integer, or a class id is out of range.
    """
    if isinstance(pred, torch.Tensor) or isinstance(gt, torch.Tensor):
        device = pred.device if isinstance(pred, torch.Tensor) else gt.device
        pred, gt = torch.as_tensor(pred, device=device), torch.as_tensor(gt, device=device)
    _check_inputs(pred, gt, num_classes, ignore, source)
    n = num_classes
    valid = gt != ignore
    if isinstance(pred, torch.Tensor):
        keys = gt[valid].long() * n + pred[valid].long()  # (P_valid,)
        return torch.bincount(keys, minlength=n * n).reshape(n, n)  # (N*N,) -> (N, N)
    keys = np.asarray(gt)[valid].astype(np.int64) * n + np.asarray(pred)[valid].astype(np.int64)
    return np.bincount(keys, minlength=n * n).reshape(n, n).astype(np.int64)  # (N*N,) -> (N, N)


def _as_numpy_conf(conf: ArrayLike) -> np.ndarray:
    if isinstance(conf, torch.Tensor):
        conf = conf.detach().cpu().numpy()
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square (N, N), got shape {conf.shape}")
    return conf.astype(np.float64)


def per_class_iou(conf: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU and accuracy (fractions, not percent) from a confusion matrix.

    Args:
        conf: ``(N, N)`` confusion matrix, rows = ground truth, columns = prediction.

    Returns:
        ``(iou, acc)``, each ``(N,)`` float64; NaN for classes without ground-truth pixels.
    """
    c = _as_numpy_conf(conf)
    tp = np.diag(c)
    gt_pixels = c.sum(axis=1)  # row sums: TP + FN
    pred_pixels = c.sum(axis=0)  # column sums: TP + FP
    has_gt = gt_pixels > 0
    iou = np.full(c.shape[0], np.nan)
    acc = np.full(c.shape[0], np.nan)
    iou[has_gt] = tp[has_gt] / (gt_pixels + pred_pixels - tp)[has_gt]
    acc[has_gt] = tp[has_gt] / gt_pixels[has_gt]
    return iou, acc


def harmonic_mean(seen: float, unseen: float) -> float:
    """``2 s u / (s + u)``; 0 when ``s + u == 0``; NaN when either input is NaN."""
    if math.isnan(seen) or math.isnan(unseen):
        return math.nan
    if seen + unseen == 0:
        return 0.0
    return 2.0 * seen * unseen / (seen + unseen)


def _check_ids(seen_ids: Sequence[int], unseen_ids: Sequence[int], n: int) -> None:
    for name, ids in (("seen_ids", seen_ids), ("unseen_ids", unseen_ids)):
        bad = [int(i) for i in ids if not 0 <= int(i) < n]
        if bad:
            raise ValueError(f"{name} {bad} are outside [0, {n})")
    both = sorted(set(map(int, seen_ids)) & set(map(int, unseen_ids)))
    if both:
        raise ValueError(f"class ids {both} are listed as both seen and unseen")


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def zero_shot_metrics(
    conf: ArrayLike,
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
    class_names: Sequence[str],
) -> dict[str, float]:
    """Generalized zero-shot metrics from one confusion matrix, in percent.

    See the module docstring for the exact conventions (NaN for classes without ground truth,
    left out of every mean; hIoU 0 when s + u == 0, NaN when a split has no ground truth).

    Args:
        conf: ``(N, N)`` confusion matrix, rows = ground truth, columns = prediction.
        seen_ids: indices of the seen classes.
        unseen_ids: indices of the unseen classes (disjoint from ``seen_ids``).
        class_names: ``N`` names, used for the ``IoU-<name>`` and ``ACC-<name>`` keys.

    Returns:
        Flat dict of floats: ``mIoU, fwIoU, mACC, pACC, sIoU, uIoU, hIoU``, then ``IoU-<name>``
        and ``ACC-<name>`` for every class.

    Raises:
        ValueError: wrong number of names, bad or overlapping ids, or an empty matrix.
    """
    c = _as_numpy_conf(conf)
    n = c.shape[0]
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for a {n}x{n} confusion matrix")
    _check_ids(seen_ids, unseen_ids, n)
    total = c.sum()
    if total == 0:
        raise ValueError("the confusion matrix is empty: no labelled (non-ignore) pixel evaluated")
    iou, acc = per_class_iou(c)
    has_gt = ~np.isnan(iou)
    gt_freq = c.sum(axis=1) / total
    s = _nanmean(iou[np.asarray(seen_ids, dtype=np.int64)])
    u = _nanmean(iou[np.asarray(unseen_ids, dtype=np.int64)])
    res = {
        "mIoU": 100 * float(iou[has_gt].mean()),
        "fwIoU": 100 * float((iou[has_gt] * gt_freq[has_gt]).sum()),
        "mACC": 100 * float(acc[has_gt].mean()),
        "pACC": 100 * float(np.trace(c) / total),
        "sIoU": 100 * s,
        "uIoU": 100 * u,
        "hIoU": 100 * harmonic_mean(s, u),
    }
    for name, value in zip(class_names, iou):
        res[f"IoU-{name}"] = 100 * float(value)
    for name, value in zip(class_names, acc):
        res[f"ACC-{name}"] = 100 * float(value)
    return res
