"""Pictures and tables of a prediction shared by the demos: heat maps, pixel shares, the legend."""

from __future__ import annotations

import html
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["class_shares", "heat_overlay", "legend_html"]

UNSEEN_MARK = "*"


def heat_overlay(image_rgb: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB: the image half-blended with a jet heat map of ``similarity``.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB image.
        similarity: ``(H, W)`` float map, min-max scaled to the colour range.
    """
    lo, hi = float(similarity.min()), float(similarity.max())
    scaled = ((similarity - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)  # (H, W)
    heat = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
    return (0.5 * image_rgb + 0.5 * heat).astype(np.uint8)


def class_shares(prediction: np.ndarray, num_classes: int) -> list[tuple[int, float]]:
    """``(class index, share of pixels)`` of the predicted classes, largest share first.

    Args:
        prediction: ``(H, W)`` integer class indices in ``[0, num_classes)``.
        num_classes: Vocabulary size.
    """
    counts = np.bincount(prediction.ravel(), minlength=num_classes)  # (N,)
    total = max(int(counts.sum()), 1)
    present = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return [(int(i), float(counts[i]) / total) for i in present]


def legend_html(
    shares: Sequence[tuple[int, float]],
    names: Sequence[str],
    unseen: Sequence[bool],
    colors: Sequence[Sequence[int]],
) -> str:
    """An HTML table of the predicted classes: colour, name, share of pixels, unseen mark.

    Rows carry ``data-class`` (the name) and ``data-share`` (the share in [0, 1]) for programs
    that read the page.
    """
    rows = []
    for i, share in shares:
        r, g, b = (int(v) for v in colors[i])
        mark = f" <b title='unseen class'>{UNSEEN_MARK} unseen</b>" if unseen[i] else ""
        name = html.escape(names[i])
        rows.append(
            f"<tr class='cs-legend-row' data-class='{name}' data-share='{share:.4f}'>"
            f"<td><span style='display:inline-block;width:14px;height:14px;"
            f"background:rgb({r},{g},{b})'></span></td>"
            f"<td>{name}{mark}</td><td style='text-align:right'>{100 * share:.1f}%</td></tr>"
        )
    head = "<tr><th></th><th>class</th><th>pixels</th></tr>"
    return f"<table id='cs-legend'>{head}{''.join(rows)}</table>"
