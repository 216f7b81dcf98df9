"""Markdown tables of a benchmark report (for docs/PERFORMANCE.md and the README)."""

from __future__ import annotations

from typing import Any

from benchmarks.deploy_report import deploy_markdown

# Profile columns in pipeline order; unknown stages go before "rest".
STAGE_ORDER = (
    "patch_embedding",
    "clip_blocks",
    "backbone",
    "decoder",
    "csh_mlp",
    "csh_vencoder",
    "csh_norm",
    "csh_projection",
    "rest",
)


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _throughput_rows(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for batch, base in r["baseline"].items():
        rows.append(
            ["MaskCLIP-style CLIP ViT-B/16", batch, f"{base['images_per_s']:.3f}", "1.00"]
            + [_mb(base["peak_mem_mb"]), f"{base['fraction_of_gemm']:.2f}"]
        )
        for name, per_batch in r["models"].items():
            m = per_batch[batch]
            rows.append(
                [f"ChimeraSeg {name}", batch, f"{m['images_per_s']:.3f}"]
                + [f"**{m['ratio_vs_baseline']:.2f}x**", _mb(m["peak_mem_mb"])]
                + [f"{m['fraction_of_gemm']:.2f}"]
            )
    return rows


def _stage_cells(ms: dict[str, float], stages: list[str]) -> list[str]:
    return [f"{ms[s]:.0f}" if s in ms else "" for s in stages]


def _profile(r: dict[str, Any]) -> list[str]:
    """ms per image of each hooked stage, from the timed calls of the throughput table."""
    entries = [("baseline", b, e) for b, e in r["baseline"].items()]
    entries += [(n, b, e) for n, per in r["models"].items() for b, e in per.items()]
    stages: list[str] = []
    for _, _, e in entries:
        stages += [s for s in e["stages_ms_per_image"] if s not in stages]
    order = {name: i for i, name in enumerate(STAGE_ORDER)}
    stages = sorted(stages, key=lambda s: order.get(s, len(order) - 1))
    rows = [
        [name, batch, *_stage_cells(e["stages_ms_per_image"], stages)]
        + [f"{1000 / e['images_per_s']:.0f}"]
        for name, batch, e in sorted(entries, key=lambda t: (t[0] != "baseline", t[0], int(t[1])))
    ]
    ups = ", ".join(f"batch {b}: {u['ms_per_image']:.0f}" for b, u in r["upsampling"].items())
    head = ["model", "batch", *stages, "total"]
    return [
        f"ms per image by stage ({r['precision']}; forward hooks in the timed calls; `rest` ="
        f" classification, upsampling, copies; the shared upsampling alone, ms per image:"
        f" {ups}):",
        "",
        *_table(head, rows),
    ]


def _precision(c: dict[str, Any], fp32: dict[str, Any], bf16: dict[str, Any]) -> list[str]:
    rows = []
    for name, per_batch in c["speedup"].items():
        src = "baseline" if name == "baseline" else name
        for batch, ratio in per_batch.items():
            a = fp32["baseline"] if src == "baseline" else fp32["models"][src]
            b = bf16["baseline"] if src == "baseline" else bf16["models"][src]
            agree = c["argmax_agreement"].get(src)
            rows.append(
                [src, batch, f"{a[batch]['images_per_s']:.3f}", f"{b[batch]['images_per_s']:.3f}"]
                + [f"**{ratio:.2f}x**", f"{100 * agree:.2f}%" if agree is not None else "-"]
            )
    head = ["model", "batch", "fp32 images/s", "bf16 images/s", "bf16 vs fp32"]
    head += ["argmax agreement (batch 1, random weights)"]
    return ["bf16 vs fp32, same run:", "", *_table(head, rows)]


def _inference(report: dict[str, Any], size: int, num_classes: int) -> list[str]:
    lines: list[str] = []
    for precision, r in report.items():
        if precision == "bf16_vs_fp32":
            continue
        head = [f"model ({size}x{size}, {num_classes} classes, {precision})", "batch"]
        head += ["images/s", "vs baseline", "peak MB above weights", "x machine GEMM"]
        gflop = ", ".join(f"{k} {v:.1f}" for k, v in r["gflop_per_image"].items())
        lines += _table(head, _throughput_rows(r)) + [f"GFLOP per image: {gflop}.", ""]
        lines += _profile(r)
        if "exactness" in r:
            lines += _checks(r)
    if "bf16_vs_fp32" in report:
        lines += _precision(report["bf16_vs_fp32"], report["fp32"], report["bf16"])
    return lines


def _checks(r: dict[str, Any]) -> list[str]:
    """Per-stage GFLOP/s of batch 1 (stages run on their own) and the exactness checks."""
    lines: list[str] = []
    for name, b in r["breakdown"].items():
        stage_rows = [
            [
                stage,
                f"{1000 * s['median_s']:.1f}",
                f"{100 * s['share']:.1f}%" if "share" in s else "",
                f"{s['gflop']:.2f}",
                f"{s['gflops']:.1f}",
                f"{s['fraction_of_gemm']:.2f}",
            ]
            for stage, s in [*b["stages"].items(), ("**CSH total**", b["csh"])]
        ]
        lines += [f"Stages of {name}, batch 1, each run on its own:", ""]
        head = ["stage", "ms", "share", "GFLOP", "GFLOP/s", "x machine GEMM"]
        lines += _table(head, stage_rows)
    rows = []
    for name, e in r["exactness"].items():
        v, s8 = e["value_folding"], e["stride8_inexact"]
        speed = ", ".join(f"{b['speedup']:.2f}x" for b in v["blocks"])
        rows.append([name, "folded value path (exact)", f"{v['max_abs_diff']:.1e}", "-", speed])
        if "chunking" in e:
            c = e["chunking"]
            rows.append(
                [name, f"CSH in {c['chunk_tokens']}-position chunks (exact)"]
                + [f"{c['max_abs_diff']:.1e}", f"{100 * c['agreement']:.2f}%"]
                + [f"{c['speedup']:.2f}x"]
            )
        rows.append(
            [name, "CSH at stride 8 (inexact, off)", f"{s8['max_abs_diff']:.1e}"]
            + [f"{100 * s8['agreement']:.2f}%", f"{s8['speedup']:.2f}x"]
        )
    head = ["model", "path vs reference", "max abs diff", "argmax agreement", "speed-up"]
    return lines + _table(head, rows)


def _d2(r: dict[str, Any]) -> list[str]:
    if "skipped" in r:
        return [f"detectron2 path: skipped ({r['skipped']})", ""]
    rows = [
        [precision, case, f"{c['input_hw']} -> {c['output_hw']}", f"{1000 * c['core_s']:.0f}"]
        + [f"{1000 * c['d2_s']:.0f}", f"**{c['d2_vs_core']:.3f}x**"]
        + [f"{1000 * c['d2_sem_seg_postprocess_s']:.0f}", f"{c['old_vs_core']:.3f}x"]
        for precision, cases in r.items()
        for case, c in cases.items()
    ]
    head = ["precision", "case", "input -> output", "core ms", "d2 path ms", "d2 / core"]
    head += ["core + sem_seg_postprocess ms", "old / core"]
    return ["detectron2 path vs the core, MiT-B0, batch 1:", "", *_table(head, rows)]


def _training(r: dict[str, Any]) -> list[str]:
    rows = [
        [name, f"{1000 * t:.0f}", f"{100 * r['shares'][name]:.1f}%"]
        for name, t in r["stages_s"].items()
    ]
    rows.append(["**step**", f"{1000 * r['step_s']:.0f}", f"peak {_mb(r['peak_mem_mb'])} MB"])
    title = f"Training step, {r['model']}, batch {r['batch']}, {r['size']}x{r['size']} crop:"
    lines = [title, "", *_table(["stage", "ms", "share"], rows)]
    if "counted_step" in r:
        c = r["counted_step"]
        lines += [f"Forward + backward: {c['aten_calls']} aten calls, {c['syncs']} host syncs.", ""]
    return lines


def _evaluator(r: dict[str, Any]) -> list[str]:
    if "skipped" in r:
        return [f"Evaluator: skipped ({r['skipped']})", ""]
    rows = [
        [name, f"{e['pixels_per_s'] / 1e6:.2f}", f"**{e['ratio_vs_detectron2']:.2f}x**"]
        + [f"{e['ratio_vs_detectron2_no_boundary']:.2f}x", f"{e['mIoU']:.3f}"]
        for name, e in r["evaluators"].items()
    ]
    title = f"Evaluator, {r['images']} predictions {r['size']}x{r['size']}, {r['num_classes']} cls:"
    head = ["evaluator", "Mpixel/s", "vs d2", "vs d2 w/o boundary IoU", "mIoU"]
    return [title, "", *_table(head, rows)]


def _pseudo(r: dict[str, Any]) -> list[str]:
    rows, before = [], r.get("before", {})
    for mode in ("inductive", "transductive"):
        m, old = r[mode], before.get(mode, {})
        rows.append([mode, f"{m['ms_per_image']:.1f}", f"{m.get('aten_calls', '-')}"]
                    + [f"{old.get('aten_calls', '-')}", f"{m.get('syncs', '-')}",
                       f"{old.get('syncs', '-')}"])  # fmt: skip
    head = ["mode", "ms/image", "aten calls", "before", "syncs", "before"]
    return [f"Pseudo masks, {r['size']}x{r['size']}, batch {r['batch']}:", "", *_table(head, rows)]


def report_markdown(report: dict[str, Any]) -> str:
    """All sections of ``report`` as markdown, headed by the machine description."""
    m, g = report["machine"], report["gemm"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['logical_cpus']} logical CPUs, "
        f"{m['torch_num_threads']} torch threads, {m.get('memory_gb') or 0:.0f} GB), "
        f"torch {m['torch']}, device {m['device']}; load average "
        f"{m.get('load_average_1min', float('nan')):.1f} at start, "
        f"{m.get('load_average_1min_end', float('nan')):.1f} at end. CLIP: {report['clip']}. "
        f"Dense fp32 GEMM {g['size']}x{g['size']}: {g['gflops']:.1f} GFLOP/s "
        f"({g.get('kernel', 'torch')}'s kernel, the faster of the torch and onnxruntime probes).",
        "",
    ]
    size, n = report["settings"]["size"], report["num_classes"]
    sections = {"inference": lambda r: _inference(r, size, n), "d2": _d2, "train": _training}
    sections |= {"evaluator": _evaluator, "pseudo": _pseudo, "deploy": deploy_markdown}
    for key, fmt in sections.items():
        if key in report:
            lines += fmt(report[key])
    return "\n".join(lines)
