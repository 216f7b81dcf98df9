"""The lent-GPU script and its pieces on the CPU: the dry mode, the summary, the sync counter
tool and the TF32 emulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, load_script

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "tools" / "gpu_suite.sh"


def _suite(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "GPU_SUITE_PYTHON": sys.executable, **(env or {})}
    return subprocess.run(
        ["bash", str(SUITE), *args], capture_output=True, text=True, env=environ, check=False
    )


def test_the_script_parses_and_refuses_bad_arguments(tmp_path) -> None:
    assert subprocess.run(["bash", "-n", str(SUITE)], check=False).returncode == 0
    bad = _suite("--device", "tpu")
    assert bad.returncode == 2 and "--device must be cuda or cpu" in bad.stderr
    unknown = _suite("--bogus")
    assert unknown.returncode == 2 and "unknown argument '--bogus'" in unknown.stderr
    (tmp_path / "summary.json").write_text("{}")
    again = _suite("--device", "cpu", "--output", str(tmp_path))
    assert again.returncode == 2 and "already holds a summary.json" in again.stderr
    assert (tmp_path / "summary.json").read_text() == "{}"


@pytest.mark.slow
def test_dry_mode_runs_the_cuda_tests_step_into_one_folder(tmp_path) -> None:
    pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)
    run = _suite("--device", "cpu", "--steps", "pytest", env={"OUT": str(tmp_path / "out")})
    folder = tmp_path / "out" / "gpu_suite"  # $OUT is the default home of the results
    summary = json.loads((folder / "summary.json").read_text())
    assert run.returncode == 0, run.stdout + run.stderr
    assert summary["passed"] is True and summary["device"] == "cpu"
    assert [s["step"] for s in summary["steps"]] == ["pytest"]
    if not torch.cuda.is_available():  # the CUDA tests, collected and skipped
        assert "skipped" in summary["figures"]["pytest"]
        assert "needs a CUDA device" in (folder / "pytest.txt").read_text()
    assert (folder / "summary.md").read_text().startswith("# GPU suite (cpu)")


def test_summary_collects_the_figures_and_fails_a_failed_step(tmp_path) -> None:
    summary_tool = load_script("tools/gpu_suite_summary.py", "chimeraseg_gpu_suite_summary")
    (tmp_path / "steps.tsv").write_text("syncs\t0\t12\tsyncs.txt\ntf32\t124\t45\ttf32.txt\n")
    step = {"dispatch": 7, "dispatch_by_op": {}, "cuda_warnings": 5, "cuda_warning_sites": []}
    syncs = {"forward_backward": [step], "optimizer": [step], "trainer": [step]}
    (tmp_path / "syncs.json").write_text(json.dumps(syncs))
    assert summary_tool.main([str(tmp_path), "--device", "cuda"]) == 1  # tf32 timed out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["figures"]["syncs_per_step"]["trainer"] == {
        "dispatch": [7], "cuda_warnings": [5]
    }  # fmt: skip
    assert [s["exit"] for s in summary["steps"]] == [0, 124]


# ------------------------------------------------------------------------------ the pieces
def test_tf32_rounding_keeps_10_mantissa_bits_to_nearest_even() -> None:
    tool = load_script("tools/tf32_pseudo_masks.py", "chimeraseg_tf32_tool")
    x = torch.randn(10_000) * 100
    r = tool.round_to_tf32(x)
    assert (r.view(torch.int32) & 0x1FFF == 0).all()  # the 13 dropped bits are zero
    assert ((r - x).abs() <= x.abs() * 2.0**-11).all()  # half a TF32 ulp at most
    assert torch.equal(tool.round_to_tf32(r), r)  # TF32 values stay
    one = torch.tensor([1.0]).view(torch.int32)
    halfway_down = (one + 0x1000).view(torch.float32)  # 1 + half an ulp: ties to even (1.0)
    halfway_up = (one + 0x3000).view(torch.float32)  # 1 + 1.5 ulp: ties to even (1 + 2 ulp)
    assert tool.round_to_tf32(halfway_down).item() == 1.0
    assert tool.round_to_tf32(halfway_up).view(torch.int32).item() == one.item() + 0x4000


def test_tf32_emulation_rounds_matmul_and_convolution_inputs() -> None:
    tool = load_script("tools/tf32_pseudo_masks.py", "chimeraseg_tf32_tool")
    a, b = torch.randn(64, 64, dtype=torch.float64), torch.randn(64, 64, dtype=torch.float64)
    exact = a @ b
    with tool.TF32Emulation():
        emulated = (a.float() @ b.float()).double()
    plain = (a.float() @ b.float()).double()
    expected = tool.round_to_tf32(a.float()).double() @ tool.round_to_tf32(b.float()).double()
    assert (emulated - expected).abs().max() < 1e-4  # rounded inputs, float32 sums
    assert (emulated - exact).abs().max() > 10 * (plain - exact).abs().max()
    image, weight = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with tool.TF32Emulation():
        conv = torch.nn.functional.conv2d(image, weight)
    rounded = torch.nn.functional.conv2d(tool.round_to_tf32(image), tool.round_to_tf32(weight))
    torch.testing.assert_close(conv, rounded, rtol=0, atol=0)


@pytest.mark.slow
def test_tf32_tool_reports_every_mode_and_case(tmp_path) -> None:
    tool = load_script("tools/tf32_pseudo_masks.py", "chimeraseg_tf32_tool")
    out = tmp_path / "tf32.json"
    root = tmp_path / "datasets"
    argv = ["--allow-random-clip", "--images", "2", "--datasets-root", str(root)]
    report = tool.main([*argv, "--output-json", str(out)])
    assert json.loads(out.read_text()) == report and report["clip"] == "random"
    assert set(report["results"]) == {
        f"{mode}/emulated/{case}"
        for mode in ("inductive", "transductive")
        for case in ("teacher", "everywhere")
    }
    for key, r in report["results"].items():
        assert 0.0 <= r["pixel_agreement"] <= 1.0 and r["pixels"] == 2 * 160 * 192
        assert 0.0 < r["feature_rel_error_mean"] < 1e-2  # TF32 moves the features, a little
        in_masks = r["tf32_matmuls_in_pseudo_masks"]
        assert in_masks > 0 if key.endswith("everywhere") else in_masks == 0, key


@pytest.mark.slow
def test_count_syncs_counts_each_kind_of_step_on_the_cpu(tmp_path) -> None:
    pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)
    tool = load_script("tools/count_syncs.py", "chimeraseg_count_syncs")
    out = tmp_path / "syncs.json"
    argv = ["--device", "cpu", "--allow-random-clip", "--size", "64", "--steps", "1"]
    argv += ["--config-file", "configs/synthetic/chimeraseg_mitb0_synthetic.yaml"]
    argv += ["--output-json", str(out), "MODEL.CLIP.TEXT_TEMPLATES", "single"]
    result = tool.main(argv)
    assert json.loads(out.read_text()) == result
    for kind in ("forward_backward", "optimizer", "trainer"):
        (step,) = result[kind]
        assert step["cuda_warnings"] is None  # CUDA's own count needs a GPU
        assert step["dispatch"] == sum(step["dispatch_by_op"].values())
    trainer, model = result["trainer"][0], result["forward_backward"][0]
    assert trainer["dispatch"] >= model["dispatch"]  # run_step = the same + optimizer + metrics
