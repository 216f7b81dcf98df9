"""Reporting of a pseudo-mask sweep: the markdown table and the recommended setting per mode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _fmt(value: float | None) -> str:
    """One table cell: ``12.3``, or ``-`` for a missing or NaN value."""
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def format_sweep_table(
    rows: Sequence[dict[str, Any]], min_purity: float = 80.0, min_coverage: float = 90.0
) -> str:
    """Markdown table of sweep rows (:func:`~.sweep.sweep`, percent); ``ok``: both targets met.

    Args:
        rows: sweep rows.
        min_purity: purity target (pixel-weighted), percent.
        min_coverage: coverage target, percent.

    Returns:
        The table, one line per row.
    """
    header = (
        "| setting | dense path | scales | coverage | cov. latent | cov. unseen label | ceiling "
        "| purity (px) | purity (region) | 1-region purity | regions/img | unseen P | unseen R "
        "| unseen IoU | targets |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        ok = r["coverage"] >= min_coverage and r["purity_weighted"] >= min_purity
        cells = [
            r["mode"],
            r["dense_path"],
            ",".join(str(s) for s in r["scales"]),
            _fmt(r["coverage"]),
            _fmt(r["coverage_latent"]),
            _fmt(r["coverage_unseen_label"]),
            _fmt(r["coverage_ceiling"]),
            _fmt(r["purity_weighted"]),
            _fmt(r["purity_unweighted"]),
            _fmt(r["purity_one_region"]),
            _fmt(r["regions_per_image"]),
            _fmt(r.get("unseen_precision", math.nan)),
            _fmt(r.get("unseen_recall", math.nan)),
            _fmt(r.get("unseen_iou", math.nan)),
            "ok" if ok else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recommend(
    rows: Sequence[dict[str, Any]], min_purity: float = 80.0
) -> dict[str, dict[str, Any] | None]:
    """Per mode, the row with the best coverage among those with purity >= ``min_purity``.

    Args:
        rows: sweep rows.
        min_purity: pixel-weighted purity floor, percent.

    Returns:
        ``{mode: row or None}`` (None when no row of the mode reaches the purity floor).
    """
    best: dict[str, dict[str, Any] | None] = {}
    for r in rows:
        best.setdefault(r["mode"], None)
        if not r["purity_weighted"] >= min_purity:  # NaN purity never qualifies
            continue
        current = best[r["mode"]]
        if current is None or r["coverage"] > current["coverage"]:
            best[r["mode"]] = r
    return best
