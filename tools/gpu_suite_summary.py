#!/usr/bin/env python
"""Summary of a ``tools/gpu_suite.sh`` run: one line per step and the figures to record.

Reads ``steps.tsv`` (name, exit status, seconds, log) and the steps' outputs from the run folder;
writes ``summary.json`` and ``summary.md`` there and prints the markdown. Exit status 0 when every
step exited 0 and the cluster check passed, else 1.

Usage::

    python tools/gpu_suite_summary.py output/gpu_suite/<run> --device cuda
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from chimeraseg.utils.tool_parser import tool_parser


def _load(folder: str, name: str) -> Any:
    """A JSON output of the run, or None when the step wrote none (or it does not parse)."""
    path = os.path.join(folder, name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _steps(folder: str) -> list[dict[str, Any]]:
    rows = []
    with open(os.path.join(folder, "steps.tsv")) as f:
        for line in f:
            name, rc, seconds, log = line.rstrip("\n").split("\t")
            rows.append({"step": name, "exit": int(rc), "seconds": int(seconds), "log": log})
    return rows


def _pytest_line(folder: str) -> str | None:
    """pytest's final counts line ("3 passed, 2 skipped in 12.3s")."""
    try:
        with open(os.path.join(folder, "pytest.txt")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    counted = [x for x in lines if re.search(r"\d+ (passed|failed|skipped|deselected|error)", x)]
    return counted[-1].strip("= ") if counted else None


def figures(folder: str) -> dict[str, Any]:
    """The figures worth recording, from whatever outputs the run left."""
    out: dict[str, Any] = {"pytest": _pytest_line(folder)}
    report = _load(folder, os.path.join("cluster_check", "report.json"))
    if report:
        out["cluster_check"] = {c["name"]: c["status"] for c in report["checks"]}
        out["cluster_check_passed"] = report["passed"]
        amp = next((c for c in report["checks"] if c["name"] == "amp_pseudo_masks"), None)
        if amp and amp.get("record"):
            out["amp_pseudo_mask_agreement"] = {
                name: [r["precisions"][name]["agreement"] for r in amp["record"]["per_rank"]]
                for name in amp["record"]["per_rank"][0]["precisions"]
            }
        if report.get("measurement"):
            m = report["measurement"]
            out["measure"] = {
                "s_per_iter": m["s_per_iter"],
                "images_per_s": m["images_per_s_per_gpu"],
            }
    syncs = _load(folder, "syncs.json")
    if syncs:
        out["syncs_per_step"] = {
            kind: {
                "dispatch": [s["dispatch"] for s in syncs[kind]],
                "cuda_warnings": [s["cuda_warnings"] for s in syncs[kind]],
            }
            for kind in ("forward_backward", "optimizer", "trainer")
            if kind in syncs
        }
    bench = _load(folder, "benchmark.json")
    if bench:
        train = bench.get("train") or {}
        out["benchmark"] = {"train_step_s": train.get("step_s"), "file": "benchmark.md"}
    tf32 = _load(folder, "tf32.json")
    if tf32:
        out["tf32_pixel_agreement"] = {k: r["pixel_agreement"] for k, r in tf32["results"].items()}
        out["tf32_clip"] = tf32.get("clip")
    return out


def markdown(steps: list[dict[str, Any]], found: dict[str, Any], device: str) -> str:
    lines = [f"# GPU suite ({device})", "", "| step | exit | seconds | log |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['exit']} | {s['seconds']} | {s['log']} |" for s in steps]
    lines += ["", "Figures to record (docs/GPU.md):", ""]
    lines += [f"- `{key}`: `{json.dumps(value)}`" for key, value in found.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = tool_parser(
        __doc__.splitlines()[0],
        ("python tools/gpu_suite_summary.py output/gpu_suite/<run> --device cuda",),
    )
    p.add_argument("folder", help="the run folder of tools/gpu_suite.sh")
    p.add_argument("--device", default="cuda", help="the device the suite ran on (default cuda)")
    args = p.parse_args(argv)
    steps, found = _steps(args.folder), figures(args.folder)
    passed = all(s["exit"] == 0 for s in steps) and found.get("cluster_check_passed", True)
    summary = {"device": args.device, "passed": passed, "steps": steps, "figures": found}
    with open(os.path.join(args.folder, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    text = markdown(steps, found, args.device)
    with open(os.path.join(args.folder, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"[gpu_suite] {'PASS' if passed else 'FAIL'}; results in {args.folder}")
    return 0 if passed else 1


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/gpu_suite_summary.py")
