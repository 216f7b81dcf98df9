"""Evaluation figures: per-class IoU bars (seen / unseen coloured) and the γ sweep (paper Fig. 10).

Figures are drawn on a private Agg canvas, so plotting never touches pyplot's global state or
needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from chimeraseg.utils.output_files import atomic_path

__all__ = ["SEEN_COLOR", "UNSEEN_COLOR", "plot_per_class_iou", "plot_gamma_sweep"]

SEEN_COLOR = "#1f77b4"
UNSEEN_COLOR = "#d62728"
OTHER_COLOR = "#7f7f7f"


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:  # a new file renamed over ``path``
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    return path


def plot_per_class_iou(
    metrics: Mapping[str, float],
    class_names: Sequence[str],
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
    path: str,
    title: str = "",
) -> str:
    """Bar chart of ``IoU-<name>`` for every class, seen blue, unseen red; NaN bars are omitted.

    Args:
        metrics: a :func:`chimeraseg.evaluation.metrics.zero_shot_metrics` result (percent).
        class_names: ``N`` class names, in class-id order.
        seen_ids: seen class indices.
        unseen_ids: unseen class indices.
        path: output PNG file (directories are created).
        title: figure title.

    Returns:
        ``path``.
    """
    seen, unseen = set(map(int, seen_ids)), set(map(int, unseen_ids))
    values = [metrics[f"IoU-{name}"] for name in class_names]
    colors = [
        UNSEEN_COLOR if i in unseen else SEEN_COLOR if i in seen else OTHER_COLOR
        for i in range(len(class_names))
    ]
    heights = [0.0 if math.isnan(v) else v for v in values]
    fig = Figure(figsize=(max(6.0, 0.12 * len(class_names) + 2.0), 4.0))
    ax = fig.add_subplot()
    ax.bar(range(len(class_names)), heights, color=colors, width=0.8)
    for i, v in enumerate(values):
        if math.isnan(v):  # no ground truth: mark the slot instead of drawing a 0 bar
            ax.text(i, 1.0, "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, rotation=90, fontsize=6 if len(class_names) > 40 else 8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(-0.5, len(class_names) - 0.5)
    summary = ", ".join(f"{k} {metrics[k]:.1f}" for k in ("sIoU", "uIoU", "hIoU") if k in metrics)
    ax.set_title(f"{title}  ({summary})" if title else summary)
    ax.legend(
        handles=[Patch(color=SEEN_COLOR, label="seen"), Patch(color=UNSEEN_COLOR, label="unseen")],
        loc="upper right",
    )
    return _save(fig, path)


def plot_gamma_sweep(
    gammas: Sequence[float],
    sweep: Mapping[str, Sequence[float]],
    path: str,
    headline_gamma: float | None = None,
    title: str = "",
) -> str:
    """Line plot of metrics against γ (the unseen-logit bias), as in the paper's Fig. 10.

    Args:
        gammas: ``G`` bias values (x axis; plotted in sorted order).
        sweep: metric name (e.g. ``"hIoU"``, ``"uIoU"``, ``"sIoU"``) -> ``G`` values in percent.
        path: output PNG file (directories are created).
        headline_gamma: if given, marked with a vertical dashed line.
        title: figure title.

    Returns:
        ``path``.
    """
    order = sorted(range(len(gammas)), key=lambda i: gammas[i])
    xs = [gammas[i] for i in order]
    fig = Figure(figsize=(5.0, 3.5))
    ax = fig.add_subplot()
    styles = {"hIoU": ("k", "o"), "uIoU": (UNSEEN_COLOR, "s"), "sIoU": (SEEN_COLOR, "^")}
    for name, values in sweep.items():
        if len(values) != len(gammas):
            raise ValueError(f"sweep[{name!r}] has {len(values)} values for {len(gammas)} gammas")
        color, marker = styles.get(name, (None, "."))
        ax.plot(xs, [values[i] for i in order], label=name, color=color, marker=marker)
    if headline_gamma is not None:
        ax.axvline(headline_gamma, color="0.5", linestyle="--", linewidth=1)
    ax.set_xlabel("γ (bias added to unseen logits)")
    ax.set_ylabel("IoU (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)
