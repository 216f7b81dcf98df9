"""Pseudo-mask quality on one label map pair: per-image counts and the derived percentages.

Coverage of the hidden (unseen) pixels, size and majority class of every latent region, purity,
the one-region purity reference, and the true/false positives of the transductive unseen labels
with their precision, recall and IoU. :class:`~.accumulator.QualityAccumulator` sums these counts
over a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from chimeraseg import IGNORE_LABEL


def coverage_counts(
    pseudo: torch.Tensor,
    true: torch.Tensor,
    unseen_ids: Sequence[int],
    num_seen: int,
    latent_start: int,
) -> tuple[int, int, int]:
    """Hidden pixels and how many of them the pseudo masks label.

    Args:
        pseudo: ``(H, W)`` long pseudo labels (training space: seen ``0..Ns-1``, then unseen and
            latent labels, 255).
        true: ``(H, W)`` long ground truth in dataset ids (unseen classes not hidden).
        unseen_ids: dataset ids of the unseen classes.
        num_seen: ``Ns``.
        latent_start: first latent label (``Ns`` inductive, ``Ns + Nu`` transductive).

    Returns:
        ``(hidden, covered, covered_by_unseen_label)``: the number of pixels whose true class is
        unseen, how many of them got a latent or unseen label (any label ``>= Ns`` other than
        255), and how many of those got an unseen label (``Ns .. latent_start-1``).
    """
    hidden = _isin(true, unseen_ids)
    labelled = (pseudo >= num_seen) & (pseudo != IGNORE_LABEL)
    unseen_label = (pseudo >= num_seen) & (pseudo < latent_start)
    return (
        int(hidden.sum()),
        int((hidden & labelled).sum()),
        int((hidden & unseen_label).sum()),
    )


def region_purity_counts(
    pseudo: torch.Tensor,
    true: torch.Tensor,
    latent_start: int,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Size and majority-class pixel count of every latent region.

    Pixels whose ground truth is 255 do not count; a region made only of such pixels
    is left out.

    Args:
        pseudo: ``(H, W)`` long pseudo labels; latent regions are ``latent_start ..`` below
            255.
        true: ``(H, W)`` long ground truth in dataset ids ``0..num_classes-1`` or 255.
        latent_start: first latent label.
        num_classes: ``N`` dataset classes.

    Returns:
        ``(sizes, majority)``: ``(R,)`` int64 counted pixels per region and ``(R,)`` int64 pixels
        of the region's majority true class, regions in label order.
    """
    latent = (pseudo >= latent_start) & (pseudo != IGNORE_LABEL) & (true != IGNORE_LABEL)
    if not bool(latent.any()):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    region = (pseudo[latent] - latent_start).long()  # (P,) 0-based region index
    joint = region * num_classes + true[latent].long()  # (P,) region x true-class cell
    num_regions = int(region.max()) + 1
    hist = torch.bincount(joint, minlength=num_regions * num_classes).view(num_regions, -1)
    sizes = hist.sum(dim=1)
    present = sizes > 0
    return sizes[present].numpy(), hist.max(dim=1).values[present].numpy()


def purity_summary(sizes: np.ndarray, majority: np.ndarray) -> tuple[float, float]:
    """Purity in percent: ``(pixel-weighted mean, unweighted mean)`` over regions.

    Args:
        sizes: ``(R,)`` pixels per region.
        majority: ``(R,)`` pixels of each region's majority class.

    Returns:
        ``(100 * sum(majority) / sum(sizes), 100 * mean(majority / sizes))``; NaN without regions.
    """
    sizes, majority = np.asarray(sizes, np.float64), np.asarray(majority, np.float64)
    if sizes.size == 0:
        return math.nan, math.nan
    return 100.0 * majority.sum() / sizes.sum(), 100.0 * float(np.mean(majority / sizes))


def one_region_purity_counts(
    true: torch.Tensor, unseen_ids: Sequence[int], num_classes: int
) -> tuple[int, int]:
    """Purity reference: all hidden pixels of the image as one region.

    Args:
        true: ``(H, W)`` long ground truth in dataset ids.
        unseen_ids: unseen dataset ids.
        num_classes: ``N``.

    Returns:
        ``(hidden pixels, pixels of the image's most frequent unseen class)``.
    """
    hidden = true[_isin(true, unseen_ids)]
    if hidden.numel() == 0:
        return 0, 0
    return int(hidden.numel()), int(torch.bincount(hidden, minlength=num_classes).max())


def unseen_label_counts(
    pseudo: torch.Tensor,
    true: torch.Tensor,
    unseen_ids: Sequence[int],
    num_seen: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positives and false negatives of every unseen label (transductive).

    Unseen label ``Ns + j`` predicts unseen class ``unseen_ids[j]``. Pixels whose ground truth is
    255 do not count.

    Args:
        pseudo: ``(H, W)`` long pseudo labels.
        true: ``(H, W)`` long ground truth in dataset ids.
        unseen_ids: the ``Nu`` unseen dataset ids, in unseen-label order.
        num_seen: ``Ns``.

    Returns:
        ``(tp, fp, fn)``, each ``(Nu,)`` int64.
    """
    known = true != IGNORE_LABEL
    tp, fp, fn = (np.zeros(len(unseen_ids), np.int64) for _ in range(3))
    for j, class_id in enumerate(unseen_ids):
        pred = (pseudo == num_seen + j) & known
        gt = true == int(class_id)
        tp[j] = int((pred & gt).sum())
        fp[j] = int((pred & ~gt).sum())
        fn[j] = int((~pred & gt).sum())
    return tp, fp, fn


def precision_recall_iou(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and IoU in percent (NaN where undefined).

    Args:
        tp: ``(C,)`` true positives.
        fp: ``(C,)`` false positives.
        fn: ``(C,)`` false negatives.

    Returns:
        ``(precision, recall, iou)``, each ``(C,)`` float64: ``tp/(tp+fp)``, ``tp/(tp+fn)``,
        ``tp/(tp+fp+fn)``.
    """
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, 100.0 * tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, 100.0 * tp / (tp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, 100.0 * tp / (tp + fp + fn), np.nan)
    return precision, recall, iou


def _isin(values: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """``(H, W)`` bool: ``values`` is one of ``ids``."""
    return torch.isin(values, torch.as_tensor(list(ids), dtype=values.dtype))
