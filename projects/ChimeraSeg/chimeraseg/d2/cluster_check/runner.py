"""Runs the cluster check: environment, one launch of every phase, verdicts, report files.

The parent process reports the environment, prepares the synthetic world (dataset and CLIP) and the
memory estimate, starts every phase in one ``detectron2.engine.launch`` (NCCL on all visible GPUs,
or gloo with two CPU processes) and turns the per-rank phase files into the report. A phase that
crashes (or hangs past the timeout) fails its check and the ones after it, with the error.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chimeraseg.d2.cluster_check.amp_masks import AMP_PHASE, amp_assertions, amp_precisions
from chimeraseg.d2.cluster_check.environment import environment_report
from chimeraseg.d2.cluster_check.measure import precision_skip_reason
from chimeraseg.d2.cluster_check.phases import TRAIN_PHASES, CheckPlan, check_worker, phase_file
from chimeraseg.d2.cluster_check.report import (
    FORMAT,
    check,
    eval_assertions,
    summary,
    train_assertions,
    write_report,
)

__all__ = ["CHECKS", "RunOptions", "rerun_command", "run_cluster_check"]

CHECKS = ("train_fp32", "eval_only", "train_bf16", "train_fp16", AMP_PHASE, "measure")
DATASET_SIZES = {"num_train": 16, "num_val": 4}  # the synthetic world's images for the check


@dataclass(frozen=True)
class RunOptions:
    """The parent's inputs (the tool's arguments).

    Attributes:
        argv: the tool's command line (for the rerun commands).
        checks: which of :data:`CHECKS` to run.
        device: ``"cuda"`` or ``"cpu"``.
        processes: processes to launch.
        output: directory of this run (created; must not hold a report yet).
        datasets_root: where the synthetic dataset is written (reused when complete).
        plan: the launched processes' plan (its ``phases`` and ``run_dir`` are filled in here).
        timeout_minutes: process-group timeout of the launch.
    """

    argv: tuple[str, ...]
    checks: tuple[str, ...]
    device: str
    processes: int
    output: str
    datasets_root: str
    plan: CheckPlan
    timeout_minutes: float


def rerun_command(argv: tuple[str, ...], checks: list[str]) -> str:
    """The tool's command line restricted to ``checks`` (replacing any ``--checks``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--checks", "--output"):
            skip = True  # a rerun gets its own run directory
        elif not arg.startswith(("--checks=", "--output=")):
            kept.append(arg)
    script = os.path.relpath(kept[0]) if kept else "tools/check_cluster.py"
    return shlex.join(["python", script, "--checks", ",".join(checks), *kept[1:]])


def _skip_reason(name: str, device: str) -> str:
    """Why ``name`` cannot run here ("" when it can)."""
    if name in ("train_bf16", "train_fp16"):
        return precision_skip_reason(device, name[-4:])
    if name == AMP_PHASE and not amp_precisions(device):
        return f"no autocast precision runs on {device}"
    return ""


def _launch(options: RunOptions, phases: tuple[str, ...]) -> str:
    """Runs ``phases`` on every process; returns the error text of a crash ("" when none)."""
    from detectron2.engine import launch

    plan = replace(options.plan, phases=phases, run_dir=options.output)
    try:
        launch(
            check_worker,
            options.processes,
            dist_url="auto",
            args=(plan,),
            timeout=timedelta(minutes=options.timeout_minutes),
        )
    except Exception:  # noqa: BLE001 -- any crash of any rank becomes the failing check's reason
        return traceback.format_exc(limit=8)[-3000:]
    return ""


def _read_ranks(options: RunOptions, phase: str) -> list[dict] | None:
    """Every rank's record of ``phase`` (rank 0 first), or None when one is missing."""
    paths = [phase_file(options.output, r, phase) for r in range(options.processes)]
    if not all(os.path.isfile(p) for p in paths):
        return None
    records = []
    for path in paths:
        with open(path) as f:
            records.append(json.load(f))
    return records


def _measurement(ranks: list[dict], estimate_bytes: int | None, infer_size: int) -> dict:
    """Rank 0's figures with the slowest rank's speed, the estimate and the projection."""
    m = dict(ranks[0])
    m["s_per_iter"] = max(m["s_per_iter_all_ranks"])
    m["images_per_s_per_gpu"] = m["images_per_gpu"] / m["s_per_iter"]
    m["peak_memory"] = max((r["peak_memory"] for r in ranks), key=lambda p: p["allocated"])
    m["estimate_bytes"] = estimate_bytes
    m["projected_hours"] = m["schedule"]["max_iter_here"] * m["s_per_iter"] / 3600.0
    m["infer_size"] = infer_size
    return m


def _verdicts(options: RunOptions, crash: str, estimate_bytes: int | None) -> tuple[list, dict]:
    """One check per requested name, from the phase files; the measurement section."""
    checks, measurement, crashed = [], None, False
    for name in options.checks:
        needs = ["train_fp32", name] if name == "eval_only" else [name]
        command = rerun_command(options.argv, list(dict.fromkeys(needs)))
        reason = _skip_reason(name, options.device)
        if reason:
            checks.append({"name": name, "status": "SKIP", "assertions": [], "command": command,
                           "reason": reason})  # fmt: skip
            continue
        ranks = _read_ranks(options, name)
        if ranks is None:
            why = "not reached: an earlier phase crashed" if crashed else f"crashed:\n{crash}"
            crashed = True
            checks.append(check(name, [], command, reason=why or "no result written"))
            continue
        if name in TRAIN_PHASES:
            record = {k: ranks[0][k] for k in ("iterations", "sgd", "state", "batchnorm")}
            record["finite_per_rank"] = [r["finite"] for r in ranks]
            checks.append(check(name, train_assertions(name, ranks), command, record=record))
        elif name == "eval_only":
            record = {"weights": ranks[0]["weights"], "metrics": ranks[0]["metrics"]}
            checks.append(check(name, eval_assertions(ranks[0]), command, record=record))
        elif name == AMP_PHASE:
            record = {"per_rank": ranks}
            checks.append(check(name, amp_assertions(ranks), command, record=record))
        else:
            measurement = _measurement(ranks, estimate_bytes, options.plan.measure["infer_size"])
            ok = measurement["s_per_iter"] > 0
            detail = f"{measurement['s_per_iter']:.3f} s/iter"
            checks.append(check(name, [{"name": "timed", "passed": ok, "detail": detail}], command))
    return checks, measurement


def _memory_estimate(config_file: str, opts: list[str]) -> int | None:
    """``tools/estimate_gpu_memory.py``'s computed bytes of ``config_file`` (None on failure)."""
    from chimeraseg.d2.memory_estimate import estimate

    try:
        return estimate(config_file, opts).total
    except Exception as e:  # noqa: BLE001 -- the measurement is still reported without it
        print(f"[check_cluster] memory estimate of {config_file} failed: {e}", file=sys.stderr)
        return None


def run_cluster_check(options: RunOptions) -> tuple[dict[str, Any], str]:
    """Runs the check; returns the report and its one-screen summary (files already written)."""
    from chimeraseg.data.synthetic import make_synthetic_dataset

    if os.path.exists(os.path.join(options.output, "report.json")):
        raise FileExistsError(f"{options.output} already holds a report; give a new --output")
    os.makedirs(options.output, exist_ok=True)
    start = time.perf_counter()
    environment = environment_report(options.device, options.processes)
    make_synthetic_dataset(options.datasets_root, **DATASET_SIZES)
    measure = options.plan.measure
    estimate_bytes = None
    if "measure" in options.checks:
        estimate_bytes = _memory_estimate(measure["config_file"], measure["opts"])
    runnable = tuple(c for c in options.checks if not _skip_reason(c, options.device))
    crash = _launch(options, runnable) if runnable else ""
    checks, measurement = _verdicts(options, crash, estimate_bytes)
    report = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *options.argv]),
        "passed": all(c["status"] != "FAIL" for c in checks),
        "environment": environment,
        "world_size": options.processes,
        "planted_faults": list(options.plan.faults),
        "checks": checks,
        "measurement": measurement,
        "seconds": round(time.perf_counter() - start, 1),
    }
    paths = write_report(report, options.output)
    return report, summary(report, paths)
