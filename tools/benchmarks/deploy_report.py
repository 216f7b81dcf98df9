"""Text and markdown tables of the deploy section (tools/benchmarks/deploy.py)."""

from __future__ import annotations

from typing import Any


def _rows(r: dict[str, Any]) -> list[list[str]]:
    agreement = r.get("argmax_agreement", {})
    rows = []
    for batch, paths in r["paths"].items():
        for name, e in paths.items():
            rows.append([
                batch,
                name,
                f"{e['images_per_s']:.2f}",
                f"{e.get('ratio_vs_eager_fp32', float('nan')):.2f}",
                f"{e.get('ratio_vs_eager_bf16', float('nan')):.2f}",
                f"{100 * agreement[name]:.2f}" if name in agreement else "n/a",
            ])  # fmt: skip
    return rows


def _profile_rows(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for runtime, ops in r.get("profile", {}).items():
        rows += [[runtime, o["op"], f"{o['ms']:.1f}", f"{100 * o['share']:.0f}"] for o in ops]
    return rows


HEAD = ["batch", "path", "images/s", "vs eager fp32", "vs eager bf16", "argmax agreement %"]
PROFILE_HEAD = ["runtime", "operator", "ms (batch 1)", "% of its time"]


def deploy_lines(r: dict[str, Any]) -> list[str]:
    """Plain-text table for the console report."""
    lines = ["", f"Deploy (MiT-B0; onnxruntime {r['onnxruntime']}, {r['threads']} threads)"]
    lines.append("  " + "".join(f"{h:>20}" for h in HEAD))
    lines += ["  " + "".join(f"{c:>20}" for c in row) for row in _rows(r)]
    lines.append(f"  torch.compile first call (s, per batch): {r.get('compile_first_call_s')}")
    lines += ["  " + "  ".join(row) for row in _profile_rows(r)]
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows), ""]


def deploy_markdown(r: dict[str, Any]) -> list[str]:
    """Markdown tables: images/s, ratios, agreement; then the per-operator profiles."""
    title = (
        f"Deploy: MiT-B0, logits at stride 4, onnxruntime {r['onnxruntime']}, "
        f"{r['threads']} threads; torch.compile's first call per batch size (compilation, s): "
        f"{r.get('compile_first_call_s', 'not run')}:"
    )
    return [title, "", *_table(HEAD, _rows(r)), *_table(PROFILE_HEAD, _profile_rows(r))]
