"""The ablation page ``ABLATIONS.md`` (tables, provenance) and the plot ``ablations.png``.

Both are rewritten from every run of the ledger; the hand-written "What it shows" section of an
existing page is kept.
"""

from __future__ import annotations

import math
import os
import shlex
import statistics
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ablations.runner import METRICS, RESULTS_FILE
from ablations.variants import TOOL, VARIANTS
from chimeraseg.utils.output_files import atomic_path, atomic_write_text

PAGE_FILE = "ABLATIONS.md"
PLOT_FILE = "ablations.png"
ANALYSIS_HEADING = "## What it shows"
ANALYSIS_MARKER = "<!-- analysis -->"


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant (table order): its seeds and the mean and std of each metric."""
    rows = []
    for variant in VARIANTS:
        runs = sorted((r for r in records if r["variant"] == variant.name), key=lambda r: r["seed"])
        if not runs:
            continue
        row: dict[str, Any] = {"variant": variant, "seeds": [r["seed"] for r in runs]}
        for metric in METRICS:
            row[metric] = mean_std([r[metric] for r in runs])
        rows.append(row)
    return rows


def format_mean_std(value: tuple[float, float | None]) -> str:
    """``12.34 ± 0.56`` (mean only for a single seed)."""
    mean, std = value
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def main_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the mean ± std table."""
    lines = [
        "| Variant | What changes | Paper | Seeds | sIoU | uIoU | hIoU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        v = row["variant"]
        cells = [f"`{v.name}`", v.description, v.paper, " ".join(map(str, row["seeds"]))]
        cells += [format_mean_std(row[m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_seed_table(records: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of every run's numbers."""
    lines = [
        "| Variant | Seed | sIoU | uIoU | hIoU | mIoU | Time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {v.name: i for i, v in enumerate(VARIANTS)}
    for r in sorted(records, key=lambda r: (order.get(r["variant"], 99), r["seed"])):
        cells = [f"`{r['variant']}`", str(r["seed"])]
        cells += [f"{r[m]:.2f}" for m in (*METRICS, "mIoU")] + [f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def timing_line(records: list[dict[str, Any]]) -> str:
    """The markdown bullet on the time per run and the machine's load."""
    seconds = [r["seconds"] for r in records]
    loads = [r.get("load_average", math.nan) for r in records]
    runs = f"{len(records)} run{'s' if len(records) > 1 else ''}"
    return (
        f"- Time per run (training + evaluation): mean {statistics.fmean(seconds):.0f} s "
        f"(min {min(seconds):.0f} s, max {max(seconds):.0f} s); {runs}, "
        f"{sum(seconds) / 60:.1f} min in all. 1-minute load average at the start of the runs: "
        f"{min(loads):.1f} - {max(loads):.1f} (other jobs slow the runs down)."
    )


def provenance(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines saying how the numbers were produced."""
    s, work_dir = records[0]["settings"], records[-1]["work_dir"]
    opts = shlex.join(s["opts"]) or "none"
    lines = [
        f"- Command: {', '.join(f'`{c}`' for c in unique(r['command'] for r in records))}",
        f"- Config: `{s['config_file']}` ({records[0]['iterations']} iterations per run), "
        f"extra overrides: `{opts}`; CLIP mode `{s['clip_mode']}`.",
        f"- Data: {s['dataset']['train']} training and {s['dataset']['val']} validation images "
        f"(unseen classes: {', '.join(synthetic_split().unseen_names)}).",
        f"- Machine: {'; '.join(unique(r['machine'] for r in records))}.",
        timing_line(records),
        "- CLIP per variant:",
    ]
    for row in rows:
        clips = unique(r["clip"] for r in records if r["variant"] == row["variant"].name)
        lines.append(f"  - `{row['variant'].name}`: {'; '.join(clips)}")
    lines.append(f"- Every run: `{work_dir}/{RESULTS_FILE}` (one JSON line per run, with all "
                 "γ of the evaluator's sweep), logs and evaluation files in "
                 f"`{work_dir}/<variant>/seed<k>/`.")  # fmt: skip
    return lines


def synthetic_split() -> Any:
    """The synthetic world's class split (names, seen and unseen ids)."""
    from chimeraseg.data.splits import get_split

    return get_split("synthetic")


def unique(items: Iterator[str]) -> list[str]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


def existing_analysis(page: str) -> str | None:
    """The hand-written body of the "What it shows" section of an existing page, if any."""
    if ANALYSIS_HEADING not in page:
        return None
    body = page.split(ANALYSIS_HEADING, 1)[1].split("\n## ", 1)[0].strip()
    return body if body and body != ANALYSIS_MARKER else None


def render_page(records: list[dict[str, Any]], analysis: str | None) -> str:
    """The markdown page: table, plot, analysis placeholder, per-seed numbers, provenance."""
    rows = summarize(records)
    split = synthetic_split()
    gammas = ", ".join(f"{g:g}" for g in unique(r["gamma"] for r in records))
    intro = textwrap.fill(
        (
            "Ablations of Chimera-Seg (the paper's Tables III, VIII and XII) repeated on the "
            f"bundled synthetic zero-shot dataset ({len(split.class_names)} classes, "
            f"{len(split.unseen)} unseen), written by "
            f"`{TOOL}`. Numbers: mIoU (%) over the seen classes (sIoU), the unseen classes "
            f"(uIoU) and their harmonic mean (hIoU) on `synthetic_zs_val` at γ = {gammas} "
            "(`TEST.GAMMA`): mean ± sample standard deviation over the seeds of each row (one "
            "seed: its value). Every number is this tool's output, none is from the paper."
        ),
        width=100,
    )
    parts = [
        "# Ablations on the synthetic world", "", intro, "", *main_table(rows), "",
        f"![sIoU, uIoU and hIoU per variant]({PLOT_FILE})", "",
        ANALYSIS_HEADING, "", analysis or ANALYSIS_MARKER, "",
        "## Per seed", "", *per_seed_table(records), "",
        "## How it was produced", "", *provenance(records, rows), "",
    ]  # fmt: skip
    return "\n".join(parts)


def plot(records: list[dict[str, Any]], path: str) -> None:
    """Grouped bars of sIoU / uIoU / hIoU per variant with std error bars (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = summarize(records)
    fig = Figure(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(METRICS)
    for i, metric in enumerate(METRICS):
        means = [row[metric][0] for row in rows]
        stds = [row[metric][1] or 0.0 for row in rows]
        xs = [j + (i - 1) * width for j in range(len(rows))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=metric)
    top = max(row[m][0] + (row[m][1] or 0.0) for row in rows for m in METRICS)
    ax.set_ylim(0, max(1.0, top) * 1.2)  # room for the legend above the bars
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([row["variant"].name for row in rows], rotation=20, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_title("Chimera-Seg ablations, synthetic world (mean ± std over seeds)")
    ax.legend(ncol=len(METRICS), fontsize="small", loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a new file renamed over ``path``
        fig.savefig(tmp, dpi=120)


def write_report(records: list[dict[str, Any]], output: str) -> None:
    """Writes ``ABLATIONS.md`` (keeping a hand-written analysis) and ``ablations.png``."""
    if not records:
        return
    os.makedirs(output, exist_ok=True)
    page_path = os.path.join(output, PAGE_FILE)
    analysis = None
    if os.path.isfile(page_path):
        analysis = existing_analysis(Path(page_path).read_text())
    atomic_write_text(page_path, render_page(records, analysis))
    plot(records, os.path.join(output, PLOT_FILE))
