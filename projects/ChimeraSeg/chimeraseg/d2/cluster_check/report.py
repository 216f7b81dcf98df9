"""Verdicts of the cluster check and its three outputs: JSON, markdown and a one-screen summary.

The report format (``chimeraseg-cluster-check/1``) is documented in docs/CLUSTER_CHECK.md. A check
is ``PASS`` when every assertion holds, ``FAIL`` when one does not or its phase crashed, ``SKIP``
when this machine cannot run it (the reason is given).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = [
    "FORMAT",
    "SGD_TOLERANCE",
    "check",
    "eval_assertions",
    "markdown",
    "summary",
    "train_assertions",
    "write_report",
]

FORMAT = "chimeraseg-cluster-check/1"
# Largest |rank's SGD loss - one-process global-batch value| accepted, per training precision.
SGD_TOLERANCE = {"train_fp32": 1e-4, "train_bf16": 2e-2, "train_fp16": 2e-2}
GIB = 1024**3


def _assertion(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "detail": detail}


def check(name: str, assertions: list[dict], command: str, **extra: Any) -> dict[str, Any]:
    """One check: PASS when every assertion holds (and there is at least one), else FAIL."""
    status = "PASS" if assertions and all(a["passed"] for a in assertions) else "FAIL"
    return {"name": name, "status": status, "assertions": assertions, "command": command, **extra}


def _sgd_assertion(phase: str, rank0: dict) -> dict[str, Any]:
    steps, tolerance = rank0["sgd"], SGD_TOLERANCE[phase]
    worst = max(steps, key=lambda s: s["max_abs_diff"], default=None)
    if worst is None:
        return _assertion("SGD loss = one-process global-batch value", False, "no SGD step seen")
    bad = [s["iter"] for s in steps if not s["max_abs_diff"] <= tolerance]
    detail = (
        f"{len(steps)} steps, global batch {sum(worst['rows_per_rank'])} "
        f"({'+'.join(map(str, worst['rows_per_rank']))}); worst step {worst['iter']}: rank losses "
        f"{_floats(worst['rank_losses'])} vs global {_floats(worst['global_losses'])}, "
        f"max |d| {worst['max_abs_diff']:.2e} (tolerance {tolerance:g})"
    )
    if bad:
        detail += f"; differs at iterations {bad[:10]}"
    return _assertion("each rank's SGD loss = the one-process global-batch value", not bad, detail)


def _state_assertion(group: str, label: str, rank0: dict) -> dict[str, Any]:
    state = rank0["state"][group]
    detail = f"{state['count']} tensors, max |d| {state['max_abs_diff']:.3g}"
    if state["mismatched"]:
        detail += f"; differ: {', '.join(state['mismatched'][:6])}"
    return _assertion(f"{label} identical on every rank", not state["mismatched"], detail)


def train_assertions(phase: str, ranks: list[dict]) -> list[dict[str, Any]]:
    """The assertions of one training phase from every rank's record (rank 0 first)."""
    rank0, world = ranks[0], len(ranks)
    nonfinite = [r["rank"] for r in ranks if not r["finite"]]
    last = rank0["losses"][-1] if rank0["losses"] else {}
    losses = {k: round(v, 4) for k, v in last.items()}
    bn = rank0["batchnorm"]
    synced = world == 1 or bn["per_process"] == 0
    return [
        _assertion(
            "global batch >= 2 images per process",
            rank0["images_per_process"] >= 2,
            f"{rank0['images_per_process']} per process x {world} processes",
        ),
        _assertion(
            "losses finite on every rank",
            not nonfinite and rank0["iterations"] > 0,
            f"{rank0['iterations']} iterations; last losses of rank 0 {losses}"
            + (f"; non-finite on ranks {nonfinite}" if nonfinite else ""),
        ),
        _sgd_assertion(phase, rank0),
        _state_assertion("parameters", "parameters", rank0),
        _state_assertion("buffers", "buffers (BatchNorm running statistics included)", rank0),
        _assertion(
            "BatchNorm layers are SyncBatchNorm",
            synced,
            f"{bn['sync']} SyncBatchNorm, {bn['per_process']} per-process BatchNorm",
        ),
    ]


def eval_assertions(rank0: dict) -> list[dict[str, Any]]:
    """``--eval-only`` produced finite summary metrics within [0, 100], hIoU among them.

    Per-class entries (``IoU-<class>``, ``ACC-<class>``) are NaN for classes absent from the
    validation images and are not checked.
    """
    metrics = {k: v for k, v in rank0["metrics"].items() if "-" not in k}
    bad = [k for k, v in metrics.items() if not (math.isfinite(v) and 0.0 <= v <= 100.0)]
    shown = {k: round(v, 2) for k, v in metrics.items() if k in ("sIoU", "uIoU", "hIoU", "mIoU")}
    return [
        _assertion("evaluation returned hIoU", "hIoU" in metrics, f"{shown}"),
        _assertion(
            "metrics finite, within [0, 100]", not bad, f"out of range: {bad}" if bad else ""
        ),
    ]


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (an error's message after its traceback)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _floats(values: list[float]) -> list[float]:
    return [round(float(v), 5) for v in values]


def write_report(report: dict[str, Any], out_dir: str) -> tuple[str, str]:
    """Writes ``report.json`` and ``report.md`` into ``out_dir``; returns their paths."""
    json_path, md_path = os.path.join(out_dir, "report.json"), os.path.join(out_dir, "report.md")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    with open(md_path, "w") as f:
        f.write(markdown(report))
    return json_path, md_path


def _environment_line(env: dict[str, Any]) -> str:
    gpus = env["gpus"]
    names = ", ".join(sorted({g["name"] for g in gpus})) or "none"
    d2 = env["detectron2"]
    return (
        f"torch {env['torch']} (CUDA {env['torch_cuda'] or '-'}, cuDNN {env['cudnn'] or '-'}, "
        f"NCCL {env['nccl'] or '-'}), detectron2 {d2['version']} "
        f"({'CUDA' if d2['built_with_cuda'] else 'CPU-only'} build), {len(gpus)} GPUs ({names}); "
        f"launch: {env['launch_processes']} processes, {env['backend']}"
    )


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: environment, one row per check, the measurement."""
    lines = [
        f"# ChimeraSeg cluster check: {'PASS' if report['passed'] else 'FAIL'}",
        "",
        f"Command: `{report['command']}`  ",
        f"Created: {report['created']}",
        "",
        f"Environment: {_environment_line(report['environment'])}",
        "",
        "| check | status | assertions / reason |",
        "|---|---|---|",
    ]
    for c in report["checks"]:
        parts = [
            f"{'ok' if a['passed'] else '**FAILED**'}: {a['name']}"
            + (f" ({a['detail']})" if a["detail"] else "")
            for a in c["assertions"]
        ]
        if c.get("reason"):
            parts.append(last_line(c["reason"]))
        lines.append(f"| {c['name']} | {c['status']} | {'<br>'.join(parts)} |")
    lines += ["", *_measurement_markdown(report.get("measurement"))]
    failing = [c for c in report["checks"] if c["status"] == "FAIL"]
    if failing:
        lines += ["", "Rerun a failing check:", ""]
        lines += [f"* {c['name']}: `{c['command']}`" for c in failing]
    for c in failing:
        if "\n" in c.get("reason", ""):
            lines += ["", f"### {c['name']}: error", "", "```", c["reason"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _measurement_markdown(m: dict[str, Any] | None) -> list[str]:
    if not m:
        return []
    peak, est = m["peak_memory"], m.get("estimate_bytes")
    infer = ", ".join(
        f"{k} {v['images_per_s']:.2f}" if "images_per_s" in v else f"{k} skipped ({v['skipped']})"
        for k, v in m["inference"].items()
    )
    rows = [
        ("config", f"`{m['config']}` ({m['weights']})"),
        ("per GPU", f"{m['images_per_gpu']} x {m['crop'][0]}x{m['crop'][1]}"),
        ("s/iter (slowest rank)", f"{m['s_per_iter']:.3f}"),
        ("images/s/GPU", f"{m['images_per_s_per_gpu']:.2f}"),
        (f"peak memory ({peak['kind']})", f"{peak['allocated'] / GIB:.2f} GiB"),
        ("reserved", f"{peak['reserved'] / GIB:.2f} GiB"),
        ("computed (tools/estimate_gpu_memory.py)", f"{est / GIB:.2f} GiB" if est else "-"),
        ("schedule here", f"{m['schedule']['max_iter_here']} iterations"),
        ("projected training time", f"{m['projected_hours']:.1f} h (no data loading, no eval)"),
        (f"inference images/s at {m['infer_size']}^2", infer),
    ]
    return ["## Measurement", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def summary(report: dict[str, Any], paths: tuple[str, str]) -> str:
    """One screen: the verdict, one line per check, the first failing assertion and its rerun."""
    env = report["environment"]
    lines = [
        f"ChimeraSeg cluster check: {'PASS' if report['passed'] else 'FAIL'}",
        f"  {_environment_line(env)}",
    ]
    for c in report["checks"]:
        failed = [a for a in c["assertions"] if not a["passed"]]
        if c["status"] == "FAIL":
            what = f"{failed[0]['name']}: {failed[0]['detail']}" if failed else ""
            what = what or last_line(c.get("reason", ""))
        elif c["status"] == "SKIP":
            what = c.get("reason", "")
        else:
            what = f"{len(c['assertions'])} assertions hold"
        lines.append(f"  {c['status']:<4}  {c['name']:<12}  {what[:400]}")
        if c["status"] == "FAIL":
            lines.append(f"        rerun: {c['command']}")
    m = report.get("measurement")
    if m:
        lines.append(
            f"  measured: {m['s_per_iter']:.3f} s/iter, {m['images_per_s_per_gpu']:.2f} "
            f"images/s/GPU, peak {m['peak_memory']['allocated'] / GIB:.2f} GiB (computed "
            f"{(m.get('estimate_bytes') or 0) / GIB:.2f}), schedule ~{m['projected_hours']:.1f} h"
        )
    lines.append(f"  report: {paths[0]} and {paths[1]}")
    return "\n".join(lines)
