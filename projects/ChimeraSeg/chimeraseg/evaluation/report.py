"""Turning per-γ confusion matrices into reported numbers: flat result dicts, JSON and a table."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from chimeraseg.evaluation.metrics import ArrayLike, zero_shot_metrics
from chimeraseg.utils.output_files import atomic_open

__all__ = [
    "DEFAULT_GAMMA_SWEEP",
    "SWEEP_METRICS",
    "gamma_key",
    "summarize_sweep",
    "transfer_summary",
    "flat_results",
    "format_table",
    "write_json",
]

# 0.0, 0.1, ..., 1.0: the range of the paper's Fig. 10 around its COCO-Stuff choice γ = 0.5.
DEFAULT_GAMMA_SWEEP: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
# Metrics reported for every γ of a sweep (the headline γ additionally reports per-class IoU).
SWEEP_METRICS: tuple[str, ...] = ("sIoU", "uIoU", "hIoU", "mIoU")


def gamma_key(metric: str, gamma: float) -> str:
    """Flat result key of one metric at one γ, e.g. ``"hIoU@gamma=0.50"``."""
    text = f"{gamma:.2f}" if round(gamma, 2) == gamma else f"{gamma:g}"
    return f"{metric}@gamma={text}"


def summarize_sweep(
    conf: ArrayLike,
    gammas: Sequence[float],
    headline_gamma: float,
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Metrics for every γ and the full metrics of the headline γ.

    Args:
        conf: ``(G, N, N)`` confusion matrices (rows = ground truth), one per γ.
        gammas: the ``G`` bias values, in the order of ``conf``.
        headline_gamma: the configured γ; must be one of ``gammas``.
        seen_ids: seen class indices.
        unseen_ids: unseen class indices.
        class_names: ``N`` class names.

    Returns:
        ``{"gamma": headline γ, "headline": zero_shot_metrics(...), "sweep": [{"gamma": g,
        "sIoU": ..., "uIoU": ..., "hIoU": ..., "mIoU": ..., "mACC": ..., "pACC": ...,
        "fwIoU": ...}, ...]}`` (percent).
    """
    gammas = [float(g) for g in gammas]
    if float(headline_gamma) not in gammas:
        raise ValueError(f"headline gamma {headline_gamma} is not in the sweep {gammas}")
    sweep, headline = [], None
    for g, conf_g in zip(gammas, conf):
        metrics = zero_shot_metrics(conf_g, seen_ids, unseen_ids, class_names)
        keys = ("mIoU", "fwIoU", "mACC", "pACC", "sIoU", "uIoU", "hIoU")
        sweep.append({"gamma": g, **{k: metrics[k] for k in keys}})
        if headline is None and g == float(headline_gamma):
            headline = metrics
    return {"gamma": float(headline_gamma), "headline": headline, "sweep": sweep}


# Keys that only mean something with seen and unseen classes (and the bias gamma on the unseen).
_ZERO_SHOT_KEYS = ("sIoU", "uIoU", "hIoU", "gamma")


def transfer_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of a dataset without unseen classes (cross-dataset transfer): mIoU and the
    per-class figures, without sIoU / uIoU / hIoU and without a γ sweep (γ changes nothing)."""
    headline = {k: v for k, v in summary["headline"].items() if k not in _ZERO_SHOT_KEYS}
    return {"gamma": summary["gamma"], "headline": headline, "sweep": []}


def flat_results(summary: Mapping[str, Any]) -> dict[str, float]:
    """One flat ``str -> float`` dict (what detectron2's ``print_csv_format`` expects).

    Headline metrics keep their plain names (``hIoU``, ``IoU-<class>``, ...), ``gamma`` is the
    headline γ, and each swept γ adds ``<metric>@gamma=<γ>`` for :data:`SWEEP_METRICS`.
    """
    flat = {"gamma": float(summary["gamma"]), **summary["headline"]}
    for row in summary["sweep"]:
        for metric in SWEEP_METRICS:
            flat[gamma_key(metric, row["gamma"])] = row[metric]
    return flat


def format_table(
    metrics: Mapping[str, float],
    class_names: Sequence[str],
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
) -> str:
    """Plain-text table: one row per class (split, IoU, accuracy), then the summary metrics."""
    unseen = set(map(int, unseen_ids))
    seen = set(map(int, seen_ids))
    width = max([len(n) for n in class_names] + [5])
    lines = [f"{'class':<{width}}  split   IoU(%)  ACC(%)", "-" * (width + 24)]
    for i, name in enumerate(class_names):
        split = "unseen" if i in unseen else "seen" if i in seen else "-"
        iou, acc = metrics[f"IoU-{name}"], metrics[f"ACC-{name}"]
        lines.append(f"{name:<{width}}  {split:<6} {iou:7.2f} {acc:7.2f}")
    lines.append("-" * (width + 24))
    for key in ("mIoU", "fwIoU", "mACC", "pACC", "sIoU", "uIoU", "hIoU"):
        lines.append(f"{key:<{width}}  {metrics[key]:15.2f}")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None and NumPy scalars -> Python, so the file is strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, obj: Mapping[str, Any]) -> str:
    """Writes ``obj`` as indented strict JSON (NaN becomes ``null``) through a new file renamed
    over ``path`` (:func:`~chimeraseg.utils.output_files.atomic_open`); returns ``path``."""
    with atomic_open(path, "w") as f:
        json.dump(_json_safe(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    return path
