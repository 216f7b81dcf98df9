"""Every config is seeded; paper configs rescale to fewer GPUs; the GPU-memory estimate tool."""

from __future__ import annotations

import glob
import os

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, REPO, SYNTHETIC_CONFIG, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402

ALL_YAMLS = sorted(glob.glob(str(REPO / "configs" / "**" / "*.yaml"), recursive=True))
PAPER_DIRS = ("coco-stuff-164k-156", "pascal-context-59-49")


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: os.path.relpath(p, REPO / "configs"))
def test_every_config_sets_a_seed_and_paper_configs_a_reference_world_size(path) -> None:
    cfg = get_chimeraseg_cfg(path)
    assert cfg.SEED >= 0
    if os.path.relpath(path, REPO / "configs").startswith(PAPER_DIRS):
        assert cfg.SOLVER.REFERENCE_WORLD_SIZE == 8
        assert cfg.SOLVER.IMS_PER_BATCH % cfg.SOLVER.REFERENCE_WORLD_SIZE == 0


def test_one_gpu_keeps_two_images_per_gpu_and_the_k_curve() -> None:
    from chimeraseg.d2 import ChimeraSegTrainer

    path = str(REPO / "configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml")
    cfg = get_chimeraseg_cfg(path)
    cfg.freeze()
    one = ChimeraSegTrainer.auto_scale_workers(cfg, 1)
    assert one.is_frozen()
    assert one.SOLVER.IMS_PER_BATCH == 2
    assert pytest.approx(cfg.SOLVER.BASE_LR / 8) == one.SOLVER.BASE_LR
    assert one.SOLVER.MAX_ITER == 8 * cfg.SOLVER.MAX_ITER
    sgd, sgd1 = cfg.MODEL.CHIMERASEG.SGD, one.MODEL.CHIMERASEG.SGD
    assert pytest.approx(sgd.K_STEP * cfg.SOLVER.MAX_ITER) == sgd1.K_STEP * one.SOLVER.MAX_ITER
    assert ChimeraSegTrainer.auto_scale_workers(cfg, 8) is cfg
    synthetic = get_chimeraseg_cfg(SYNTHETIC_CONFIG)
    assert ChimeraSegTrainer.auto_scale_workers(synthetic, 4) is synthetic  # reference 0: as is


def test_saved_activation_bytes_count_what_backward_keeps() -> None:
    tool = load_script("tools/estimate_gpu_memory.py", "chimeraseg_estimate_gpu_memory")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(10, 20)

        def forward(self, batch: list[dict]) -> torch.Tensor:
            return torch.relu(self.linear(batch[0]["x"])).sum()

    net = Net()
    one = tool.saved_activation_bytes(net, [{"x": torch.randn(64, 10)}])
    two = tool.saved_activation_bytes(net, [{"x": torch.randn(128, 10)}])
    assert one >= 64 * (10 + 20) * 4  # the input (for the weight gradient) and relu's output
    assert two == 2 * one  # weights are not counted; activations scale with the batch


def test_estimate_of_a_config_adds_its_parts(synthetic_root) -> None:
    tool = load_script("tools/estimate_gpu_memory.py", "chimeraseg_estimate_gpu_memory")
    e = tool.estimate(SYNTHETIC_CONFIG)
    assert (e.images_per_gpu, e.crop) == (4, (128, 128))
    assert min(e.weights, e.gradients_and_optimizer, e.activations) > 0
    assert e.total == e.weights + e.gradients_and_optimizer + e.activations
    assert "(computed)" in tool.markdown_row(e)


def test_deterministic_switch(monkeypatch) -> None:
    from chimeraseg.d2.determinism import apply_determinism

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG)
    assert not apply_determinism(cfg) and not torch.are_deterministic_algorithms_enabled()
    cfg.DETERMINISTIC = True
    try:
        assert apply_determinism(cfg)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_tool_prints_a_computed_row_per_config() -> None:
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tool = str(REPO / "tools" / "estimate_gpu_memory.py")
    result = subprocess.run(
        [sys.executable, tool, "--markdown", SYNTHETIC_CONFIG],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 1 and "chimeraseg_mitb0_synthetic.yaml" in rows[0]
    assert "4 x 128x128" in rows[0] and rows[0].endswith("(computed) |")
