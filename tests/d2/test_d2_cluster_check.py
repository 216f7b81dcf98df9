"""tools/check_cluster.py on the CPU: two gloo processes under detectron2's launch, tiny config.

One run of every check (the smoke test of the report and the cross-rank checks) and one run with
both planted faults (a rank that skips the SGD gather; per-process BatchNorm instead of
SyncBatchNorm), which must fail the very assertions that look for them and no other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

pytestmark = [pytest.mark.detectron2, pytest.mark.slow]

ITERATIONS = 3


def _argv(tiny_clip_json: str, root: Path, output: str, *extra: str) -> list[str]:
    """The tool's arguments for a tiny CPU run (random tiny CLIP, 64x64 crops, 64² inference)."""
    measure = [
        "--measure-config", SYNTHETIC_CONFIG,
        "--measure-opt", "MODEL.CLIP.NAME", tiny_clip_json,
        "--measure-opt", "INPUT.CROP.SIZE", "(64, 64)",
        "--measure-opt", "SOLVER.IMS_PER_BATCH", "2",
        "--measure-iterations", "2", "--measure-warmup", "1",
        "--infer-size", "64", "--infer-iterations", "2",
    ]  # fmt: skip
    return [
        "--device", "cpu", "--num-processes", "2",
        "--output", str(root / output), "--datasets-root", str(root / "datasets"),
        "--iterations", str(ITERATIONS), "--amp-iterations", "2", "--allow-random-clip",
        *measure, *extra,
        "MODEL.CLIP.NAME", tiny_clip_json,
        "MODEL.CLIP.TEXT_TEMPLATES", "single",
        "MODEL.CLIP.TEXT_CACHE_DIR", str(root / "text_cache"),
        "INPUT.CROP.SIZE", "(64, 64)",
        "DATALOADER.NUM_WORKERS", "0",
        "TEST.GAMMA_SWEEP", "[0.0, 1.0]",
    ]  # fmt: skip


def _run(argv: list[str], capsys: Any) -> tuple[int, dict, str]:
    """Runs the tool's main in this process; returns (exit code, report, printed summary)."""
    tool = load_script("tools/check_cluster.py", "chimeraseg_check_cluster")
    code = tool.main(argv)
    output = Path(argv[argv.index("--output") + 1])
    report = json.loads((output / "report.json").read_text())
    return code, report, capsys.readouterr().out


def _checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def smoke(tiny_clip_json, tmp_path_factory) -> tuple[int, dict, str, Path]:
    root = tmp_path_factory.mktemp("cluster_check")
    tool = load_script("tools/check_cluster.py", "chimeraseg_check_cluster")
    code = tool.main(_argv(tiny_clip_json, root, "run"))
    report = json.loads((root / "run" / "report.json").read_text())
    return code, report, (root / "run" / "report.md").read_text(), root / "run"


def test_smoke_run_passes_and_reports_the_environment(smoke) -> None:
    code, report, markdown, _ = smoke
    assert code == 0 and report["passed"] is True
    assert report["format"] == "chimeraseg-cluster-check/1"
    env = report["environment"]
    assert (env["device"], env["backend"], env["launch_processes"]) == ("cpu", "gloo", 2)
    assert env["torch"] and env["detectron2"]["version"] and env["gpus"] == []
    assert isinstance(env["detectron2"]["built_with_cuda"], bool)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {
        "train_fp32": "PASS", "eval_only": "PASS", "train_bf16": "PASS",
        "train_fp16": "SKIP", "amp_pseudo_masks": "PASS", "measure": "PASS",
    }  # fmt: skip
    assert "CUDA" in _checks(report)["train_fp16"]["reason"]
    assert "| train_fp32 | PASS |" in markdown and "## Measurement" in markdown


def test_amp_pseudo_masks_compare_bf16_with_float32_on_every_rank(smoke) -> None:
    _, report, _, _ = smoke
    check = _checks(report)["amp_pseudo_masks"]
    ranks = check["record"]["per_rank"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["batches"] == 2 for r in ranks)
    for r in ranks:
        assert list(r["precisions"]) == ["bf16"]  # fp16 autocast needs CUDA
        assert r["latent_pixels_fp32"] > 0
        assert r["precisions"]["bf16"]["agreement"] == 1.0
    assert len(check["assertions"]) == 2


@pytest.mark.parametrize("phase", ["train_fp32", "train_bf16"])
def test_cross_rank_checks_hold_on_every_step(smoke, phase) -> None:
    _, report, _, _ = smoke
    record = _checks(report)[phase]["record"]
    iterations = ITERATIONS if phase == "train_fp32" else 2
    assert record["iterations"] == iterations and record["finite_per_rank"] == [True, True]
    assert len(record["sgd"]) == iterations
    for step in record["sgd"]:
        assert step["rows_per_rank"] == [2, 2]  # global batch 4, 2 per process
        assert step["max_abs_diff"] <= 1e-4
        for rank_loss, global_loss in zip(step["rank_losses"], step["global_losses"]):
            assert rank_loss == pytest.approx(global_loss, abs=1e-4)
    for group in ("parameters", "buffers"):
        assert record["state"][group]["count"] > 0
        assert record["state"][group]["mismatched"] == []
        assert record["state"][group]["max_abs_diff"] == 0.0
    assert record["batchnorm"] == {"sync": 2, "per_process": 0}  # decoder fuse BN + CSH BN


def test_eval_only_on_the_trained_checkpoint(smoke) -> None:
    _, report, _, run = smoke
    record = _checks(report)["eval_only"]["record"]
    assert record["weights"] == str(run / "train_fp32" / "model_final.pth")
    assert Path(record["weights"]).is_file()
    for key in ("sIoU", "uIoU", "hIoU", "mIoU"):
        assert 0.0 <= record["metrics"][key] <= 100.0


def test_measurement_fields(smoke) -> None:
    _, report, _, _ = smoke
    m = report["measurement"]
    assert (m["images_per_gpu"], m["crop"]) == (2, [64, 64])
    assert m["s_per_iter"] == max(m["s_per_iter_all_ranks"]) > 0
    assert m["images_per_s_per_gpu"] == pytest.approx(2 / m["s_per_iter"])
    assert m["peak_memory"]["allocated"] > 0 and m["estimate_bytes"] > 0
    assert m["schedule"]["max_iter_here"] == 500  # the synthetic config: reference 0, as is
    assert m["projected_hours"] == pytest.approx(500 * m["s_per_iter"] / 3600)
    assert m["inference"]["fp32"]["images_per_s"] > 0
    assert m["inference"]["bf16"]["images_per_s"] > 0
    assert "CUDA" in m["inference"]["fp16"]["skipped"]


def test_planted_faults_fail_their_assertions(tiny_clip_json, tmp_path, capsys) -> None:
    faults = ["--checks", "train_fp32"]
    faults += ["--plant-fault", "skip-gather", "--plant-fault", "no-syncbn"]
    code, report, printed = _run(_argv(tiny_clip_json, tmp_path, "faulty", *faults), capsys)
    assert code == 1 and report["passed"] is False
    assert report["planted_faults"] == ["skip-gather", "no-syncbn"]
    check = _checks(report)["train_fp32"]
    assert check["status"] == "FAIL"
    verdicts = {a["name"]: a["passed"] for a in check["assertions"]}
    assert verdicts == {
        "global batch >= 2 images per process": True,
        "losses finite on every rank": True,
        "each rank's SGD loss = the one-process global-batch value": False,
        "parameters identical on every rank": True,  # DDP still averages the gradients
        "buffers (BatchNorm running statistics included) identical on every rank": False,
        "BatchNorm layers are SyncBatchNorm": False,
    }
    record = check["record"]
    for step in record["sgd"]:  # rank 0 gathers; rank 1 contrasts its own two images only
        assert step["rank_losses"][0] == pytest.approx(step["global_losses"][0], abs=1e-4)
        assert abs(step["rank_losses"][1] - step["global_losses"][1]) > 1e-3
    mismatched = record["state"]["buffers"]["mismatched"]
    assert mismatched and all("running_" in name for name in mismatched)
    assert record["batchnorm"] == {"sync": 0, "per_process": 2}
    # The summary names the failure and the command that reruns exactly this check.
    assert "FAIL  train_fp32" in printed
    rerun = next(line for line in printed.splitlines() if "rerun:" in line)
    assert "--checks train_fp32" in rerun and "--plant-fault skip-gather" in rerun
    assert "--output" not in rerun


def test_refuses_an_output_directory_with_a_report(tiny_clip_json, tmp_path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text("{}")
    tool = load_script("tools/check_cluster.py", "chimeraseg_check_cluster")
    with pytest.raises(SystemExit, match="already holds a report"):
        tool.main(_argv(tiny_clip_json, tmp_path, "old"))
    assert (tmp_path / "old" / "report.json").read_text() == "{}"
