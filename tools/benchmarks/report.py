"""Plain-text tables of a benchmark report, each figure next to its competitor as a ratio."""

from __future__ import annotations

from typing import Any

from benchmarks.deploy_report import deploy_lines


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _throughput(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Inference, {r['precision']} (whole image; ratio = images/s vs MaskCLIP-style full-CLIP"
        " baseline at the same precision)",
        f"{'model':<22}{'batch':>6}{'img/s':>10}{'ratio':>8}{'peak MB':>10}  ms/image by stage",
    ]
    for batch, base in r["baseline"].items():
        entries = [("MaskCLIP ViT-B/16", base, 1.0)]
        entries += [
            ("ChimeraSeg " + n, p[batch], p[batch]["ratio_vs_baseline"])
            for n, p in r["models"].items()
        ]
        for label, m, ratio in entries:
            stages = " ".join(f"{k} {v:.0f}" for k, v in m["stages_ms_per_image"].items())
            lines.append(
                f"{label:<22}{batch:>6}{m['images_per_s']:>10.3f}{ratio:>8.2f}"
                f"{_mb(m['peak_mem_mb']):>10}  {stages}"
            )
    return lines


def _checks(r: dict[str, Any]) -> list[str]:
    lines = []
    for name, b in r["breakdown"].items():
        lines += ["", f"Stages of {name} (batch 1): ms, share, GFLOP, GFLOP/s, fraction of GEMM"]
        rows = list(b["stages"].items()) + [("CSH total", b["csh"])]
        for stage, s in rows:
            share = f"{100 * s['share']:5.1f}%" if "share" in s else "      "
            lines.append(
                f"  {stage:<20}{1000 * s['median_s']:>9.1f} {share}{s['gflop']:>9.2f}"
                f"{s['gflops']:>9.1f}{s['fraction_of_gemm']:>8.2f}"
            )
    for name, e in r["exactness"].items():
        v, s8, c = e["value_folding"], e["stride8_inexact"], e["chunking"]
        lines += [
            "",
            f"Exactness of {name}:",
            f"  folded value path   max|diff| {v['max_abs_diff']:.2e}  speedup "
            + ", ".join(f"{b['speedup']:.2f}x" for b in v["blocks"]),
            f"  chunked CSH         max|diff| {c['max_abs_diff']:.2e}  "
            f"agreement {c['agreement']:.4f}  speedup {c['speedup']:.2f}x",
            f"  stride-8 (inexact)  agreement {s8['agreement']:.4f}  speedup {s8['speedup']:.2f}x",
        ]
    return lines


def _inference(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for precision, r in report.items():
        if precision != "bf16_vs_fp32":
            lines += _throughput(r) + (_checks(r) if "exactness" in r else [])
    if "bf16_vs_fp32" in report:
        c = report["bf16_vs_fp32"]
        lines += ["", "bf16 vs fp32 (speed-up per batch; argmax agreement at batch 1)"]
        for name, per_batch in c["speedup"].items():
            ratios = "  ".join(f"batch {b}: {x:.2f}x" for b, x in per_batch.items())
            lines.append(f"  {name:<20}{ratios}  agreement {c['argmax_agreement'][name]:.4f}")
    return lines


def _d2(r: dict[str, Any]) -> list[str]:
    if "skipped" in r:
        return ["", f"detectron2 path: skipped ({r['skipped']})"]
    lines = ["", "detectron2 path vs the core (MiT-B0, batch 1): ms, ratio"]
    for precision, cases in r.items():
        for case, c in cases.items():
            lines.append(
                f"  {precision:<5}{case:<12} core {1000 * c['core_s']:7.0f}  d2 "
                f"{1000 * c['d2_s']:7.0f} ({c['d2_vs_core']:.3f}x)  core+sem_seg_postprocess "
                f"{1000 * c['d2_sem_seg_postprocess_s']:7.0f} ({c['old_vs_core']:.3f}x)"
            )
    return lines


def _training(r: dict[str, Any]) -> list[str]:
    lines = ["", f"Training step ({r['model']}, batch {r['batch']}, {r['size']} crop)"]
    for name, t in r["stages_s"].items():
        lines.append(f"  {name:<20}{1000 * t:>9.1f} ms {100 * r['shares'][name]:5.1f}%")
    lines.append(f"  {'total':<20}{1000 * r['step_s']:>9.1f} ms  peak {_mb(r['peak_mem_mb'])} MB")
    if "counted_step" in r:
        c = r["counted_step"]
        lines.append(f"  forward + backward: {c['aten_calls']} aten calls, {c['syncs']} host syncs")
    return lines


def _evaluator(r: dict[str, Any]) -> list[str]:
    if "skipped" in r:
        return ["", f"Evaluator: skipped ({r['skipped']})"]
    lines = [
        "",
        f"Evaluator ({r['images']} images {r['size']}x{r['size']}, {r['num_classes']} cls)",
    ]
    lines.append(f"  {'evaluator':<26}{'Mpix/s':>9}{'vs d2':>8}{'vs d2 no-bIoU':>15}{'mIoU':>9}")
    for name, e in r["evaluators"].items():
        lines.append(
            f"  {name:<26}{e['pixels_per_s'] / 1e6:>9.2f}{e['ratio_vs_detectron2']:>8.2f}"
            f"{e['ratio_vs_detectron2_no_boundary']:>15.2f}{e['mIoU']:>9.3f}"
        )
    lines.append(f"  equal mIoU: {r['equal_mIoU']}")
    return lines


def _pseudo(r: dict[str, Any]) -> list[str]:
    lines = ["", f"Pseudo masks ({r['size']}x{r['size']}, batch {r['batch']})"]
    for mode in ("inductive", "transductive"):
        m, before = r[mode], r.get("before", {}).get(mode)
        line = f"  {mode:<14}{m['ms_per_image']:>9.1f} ms/image"
        if "aten_calls" in m:
            line += f"  {m['aten_calls']} aten calls, {m['syncs']} syncs per batch"
        if before:
            line += f" (sequential loops: {before['aten_calls']}, {before['syncs']})"
        lines.append(line)
    if "audit_aten_calls" in r:
        lines.append(f"  (the audit's count for the old pseudo masks: {r['audit_aten_calls']})")
    return lines


def print_report(report: dict[str, Any]) -> None:
    """Prints every section present in ``report``."""
    m, g = report["machine"], report["gemm"]
    lines = [
        f"ChimeraSeg benchmark  {m['date']}  {m['cpu']}  {m['device']}  "
        f"threads={m['torch_num_threads']}  torch {m['torch']}",
        f"CLIP: {report['clip']}  classes: {report['num_classes']}",
        f"Dense fp32 GEMM {g['size']}x{g['size']}: {g['gflops']:.1f} GFLOP/s "
        f"({g.get('kernel', 'torch')}, the faster probe)",
    ]
    formatters = {
        "inference": _inference,
        "d2": _d2,
        "train": _training,
        "evaluator": _evaluator,
        "pseudo": _pseudo,
        "deploy": deploy_lines,
    }
    for key, fmt in formatters.items():
        if key in report:
            lines += fmt(report[key])
    print("\n".join(lines))
