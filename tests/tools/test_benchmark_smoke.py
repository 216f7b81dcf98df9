"""Smoke test of tools/benchmark.py: one tiny iteration of every section (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, HAS_DETECTRON2

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _load_tool():
    """Imports tools/benchmark.py as a module (it puts tools/ on sys.path for its package)."""
    spec = importlib.util.spec_from_file_location(
        "chimeraseg_benchmark_tool", TOOLS / "benchmark.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """Runs the tool once with --tiny; returns (returned report, report read back from JSON)."""
    root = tmp_path_factory.mktemp("bench")
    out, md = root / "report.json", root / "report.md"
    args = ["--tiny", "--models", "mit_b0", "--output-json", str(out), "--output-markdown", str(md)]
    report = _load_tool().main(args)
    written = json.loads(out.read_text())
    written["_markdown"] = md.read_text()
    return report, written


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_json_report_has_every_section(tiny_report: tuple[dict, dict]) -> None:
    report, written = tiny_report
    sections = ("inference", "d2", "train", "evaluator", "pseudo", "deploy")
    for key in ("machine", "settings", "clip", "gemm", "gemm_bf16", *sections):
        assert key in written, key
    assert written["num_classes"] == 171
    assert written["machine"]["torch_num_threads"] >= 1
    assert _positive(written["gemm"]["gflops"]) and _positive(written["gemm_bf16"]["gflops"])
    assert set(written["inference"]) == {"fp32", "bf16", "bf16_vs_fp32"}
    fp32 = report["inference"]["fp32"]
    assert written["inference"]["fp32"]["baseline"].keys() == fp32["baseline"].keys()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_figures_are_positive_and_side_by_side(
    tiny_report: tuple[dict, dict], precision: str
) -> None:
    inf = tiny_report[1]["inference"][precision]
    assert inf["precision"] == precision
    assert set(inf["baseline"]) == {"1", "2"}
    for batch, base in inf["baseline"].items():
        assert _positive(base["images_per_s"])
        m = inf["models"]["mit_b0"][batch]
        assert _positive(m["images_per_s"]) and _positive(m["ratio_vs_baseline"])
        assert m["ratio_vs_baseline"] == pytest.approx(m["images_per_s"] / base["images_per_s"])
        assert m["peak_mem_mb"] is None or m["peak_mem_mb"] >= 0
        # the hooked stages come from the same calls: they cannot exceed the measured total
        stages = m["stages_ms_per_image"]
        assert {"backbone", "decoder", "csh_vencoder", "rest"} <= set(stages)
        # stages + rest = the mean time per image of the timed calls (>= the median's share)
        assert sum(stages.values()) == pytest.approx(1000 * m["mean_s"] / int(batch), rel=1e-6)
        assert {"patch_embedding", "clip_blocks", "rest"} <= set(base["stages_ms_per_image"])
        assert _positive(inf["upsampling"][batch]["ms_per_image"])


def test_bf16_is_compared_with_fp32_per_model(tiny_report: tuple[dict, dict]) -> None:
    inf = tiny_report[1]["inference"]
    c = inf["bf16_vs_fp32"]
    assert set(c["speedup"]) == {"mit_b0", "baseline"}
    b0 = c["speedup"]["mit_b0"]["1"]
    expected = inf["bf16"]["models"]["mit_b0"]["1"]["images_per_s"]
    assert b0 == pytest.approx(expected / inf["fp32"]["models"]["mit_b0"]["1"]["images_per_s"])
    assert all(0.5 < a <= 1.0 for a in c["argmax_agreement"].values())
    assert "exactness" not in inf["bf16"]  # checks run at the first precision only


def test_d2_path_section(tiny_report: tuple[dict, dict]) -> None:
    d2 = tiny_report[1]["d2"]
    if not HAS_DETECTRON2:
        assert "detectron2" in d2["skipped"]
        pytest.skip(DETECTRON2_SKIP_REASON)
    assert "skipped" not in d2, d2  # with detectron2 installed the section must run
    for precision in ("fp32", "bf16"):
        for case in ("equal_size", "resized"):
            c = d2[precision][case]
            assert _positive(c["core_s"]) and _positive(c["d2_s"])
            assert c["d2_vs_core"] == pytest.approx(c["d2_s"] / c["core_s"])


def test_breakdown_counts_flops_of_every_gemm_stage(tiny_report: tuple[dict, dict]) -> None:
    b = tiny_report[1]["inference"]["fp32"]["breakdown"]["mit_b0"]
    expected = {"backbone", "decoder", "csh_mlp", "csh_vencoder", "csh_norm_residual"}
    expected |= {"csh_projection", "classification", "upsampling"}
    assert set(b["stages"]) == expected
    for name in ("backbone", "decoder", "csh_mlp", "csh_vencoder", "csh_projection"):
        assert _positive(b["stages"][name]["gflop"]), name
        assert _positive(b["stages"][name]["median_s"]), name
    assert sum(s["share"] for s in b["stages"].values()) == pytest.approx(1.0)
    assert _positive(b["csh"]["gflops"]) and _positive(b["decoder"]["fraction_of_gemm"])


def test_exactness_checks(tiny_report: tuple[dict, dict]) -> None:
    e = tiny_report[1]["inference"]["fp32"]["exactness"]["mit_b0"]
    assert e["value_folding"]["max_abs_diff"] <= 1e-4
    assert e["value_folding"]["exact_within_1e-4"] is True
    assert e["chunking"]["max_abs_diff"] <= 1e-5 and e["chunking"]["agreement"] == 1.0
    assert 0.0 <= e["stride8_inexact"]["agreement"] <= 1.0
    assert _positive(e["stride8_inexact"]["speedup"])


def test_deploy_section_times_every_path_in_the_same_rounds(tiny_report: tuple[dict, dict]) -> None:
    deploy = tiny_report[1]["deploy"]
    paths = {"eager_fp32", "eager_bf16", "onnx_fp32", "onnx_int8"}  # --tiny skips compile
    assert set(deploy["paths"]) == {"1", "2"}
    for entries in deploy["paths"].values():
        assert set(entries) == paths
        for entry in entries.values():
            assert _positive(entry["images_per_s"]) and len(entry["times_s"]) == 1
        assert entries["eager_fp32"]["ratio_vs_eager_fp32"] == 1.0
    agreement = deploy["argmax_agreement"]
    assert agreement["eager_fp32"] == 1.0 and agreement["onnx_fp32"] >= 0.99
    assert all(0 <= v <= 1 for v in agreement.values())
    assert deploy["profile"]["eager_fp32"] and deploy["profile"]["onnx_fp32"]
    assert "Deploy: MiT-B0" in tiny_report[1]["_markdown"]
    gemm = tiny_report[1]["gemm"]
    assert gemm["kernel"] in ("torch", "onnxruntime") and _positive(gemm["onnxruntime"]["gflops"])


def test_training_pseudo_and_evaluator_sections(tiny_report: tuple[dict, dict]) -> None:
    written = tiny_report[1]
    train = written["train"]
    assert set(train["stages_s"]) >= {"teacher_forward", "pseudo_masks", "student_forward"}
    assert all(_positive(t) for t in train["stages_s"].values())
    assert train["step_s"] == pytest.approx(sum(train["stages_s"].values()))
    for mode in ("inductive", "transductive"):
        assert _positive(written["pseudo"][mode]["ms_per_image"])
    ev = written["evaluator"]
    if not HAS_DETECTRON2:  # the one reason the section may be missing, and it says so
        assert ev == {"skipped": ev["skipped"]} and "detectron2" in ev["skipped"]
        return
    assert "skipped" not in ev, ev
    assert ev["equal_mIoU"] is True
    assert all(_positive(e["pixels_per_s"]) for e in ev["evaluators"].values())
    assert all(len(e["rounds_s"]) >= 1 for e in ev["evaluators"].values())


def test_markdown_tables_cover_every_section(tiny_report: tuple[dict, dict]) -> None:
    md = tiny_report[1]["_markdown"]
    titles = ("| model (64x64, 171 classes, fp32)", "| model (64x64, 171 classes, bf16)")
    titles += ("Stages of mit_b0", "ms per image by stage (bf16", "bf16 vs fp32, same run")
    for title in (*titles, "Training step", "Evaluator", "Pseudo masks, 64x64"):
        assert title in md, title
    # batch 1 and 2 per precision, each beside the baseline
    assert md.count("| ChimeraSeg mit_b0 |") == 4


def test_random_clip_needs_an_explicit_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _load_tool()
    monkeypatch.setattr(sys, "argv", ["benchmark.py"])
    with pytest.raises(SystemExit, match="--allow-random-clip"):
        tool.main(["--sections", "pseudo"])
