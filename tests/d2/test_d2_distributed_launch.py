"""tools/train_net.py under detectron2's ``launch`` with two CPU processes (gloo, CPU DDP).

Each process runs train_net's ``main`` for two iterations on the synthetic dataset with the tiny
random CLIP; a trainer subclass records, per rank, what the run left behind (rank, DDP wrapping,
iterations, whether the checkpointer writes, final weights, evaluation results).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from typing import Any

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402

WORLD, MAX_ITER = 2, 2
METRIC_KEYS = ("sIoU", "uIoU", "hIoU", "mIoU", "hIoU@gamma=1.00")


def _free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_net() -> Any:
    """tools/train_net.py as a module (it is a script, not part of the package)."""
    return load_script("tools/train_net.py", "chimeraseg_train_net")


def _trainable_vector(model: torch.nn.Module) -> torch.Tensor:
    """All trainable parameters of ``model`` flattened into one ``(P,)`` vector."""
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])


def _rank_main(argv: list[str], datasets_root: str, record_dir: str) -> None:
    """Runs train_net's ``main`` in one launched process and records what this rank did."""
    from detectron2.engine import default_argument_parser
    from detectron2.utils import comm

    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs

    register_all_synthetic_zs(datasets_root, replace=True)
    tn = _train_net()

    class RecordingTrainer(tn.ChimeraSegTrainer):
        def train(self) -> Any:
            results = super().train()
            record = {
                "rank": comm.get_rank(),
                "world_size": comm.get_world_size(),
                "ddp": isinstance(self.model, torch.nn.parallel.DistributedDataParallel),
                "iter": self.iter,
                "saves_to_disk": self.checkpointer.save_to_disk,
                "weights": _trainable_vector(self.model),
                "eval": results,
            }
            torch.save(record, os.path.join(record_dir, f"rank{comm.get_rank()}.pt"))
            return results

    tn.ChimeraSegTrainer = RecordingTrainer  # main() builds the trainer from this module global
    tn.main(default_argument_parser().parse_args(argv))


@pytest.mark.slow
def test_launch_two_cpu_processes_trains_checkpoints_once_and_evaluates(
    tiny_opts, synthetic_root, tmp_path
):
    from detectron2.engine import launch

    from chimeraseg.d2 import ChimeraSegCheckpointer, ChimeraSegTrainer, get_chimeraseg_cfg

    out, records = tmp_path / "run", tmp_path / "records"
    records.mkdir()
    opts = [
        *tiny_opts,
        "OUTPUT_DIR", str(out),
        "SOLVER.MAX_ITER", str(MAX_ITER),
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "SEED", "0",
    ]  # fmt: skip
    argv = ["--config-file", SYNTHETIC_CONFIG, "--num-gpus", str(WORLD), *opts]
    launch(
        _rank_main,
        WORLD,
        dist_url=f"tcp://127.0.0.1:{_free_port()}",
        args=(argv, synthetic_root, str(records)),
        timeout=timedelta(minutes=3),
    )

    # Both ranks ran the full schedule inside DistributedDataParallel on a 2-process group.
    ranks = [torch.load(records / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r, rec in enumerate(ranks):
        assert (rec["rank"], rec["world_size"], rec["ddp"], rec["iter"]) == (r, WORLD, True, 2)
    # DDP averaged the gradients: both ranks end with the same weights.
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"], rtol=0, atol=0)

    # Only rank 0 writes checkpoints: exactly one file, model_final.pth, with rank 0's weights.
    assert [rec["saves_to_disk"] for rec in ranks] == [True, False]
    assert sorted(p.name for p in out.glob("*.pth")) == ["model_final.pth"]
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts)
    model = ChimeraSegTrainer.build_model(cfg)
    ChimeraSegCheckpointer(model).load(str(out / "model_final.pth"))  # verifies CLIP + vocab
    torch.testing.assert_close(_trainable_vector(model), ranks[0]["weights"], rtol=0, atol=0)

    # Evaluation ran over both shards: rank 0's metrics equal a single-process evaluation of the
    # checkpoint (the 3 val images split 2 + 1), and metrics.json logs them once.
    metrics = ranks[0]["eval"]["sem_seg"]
    single = ChimeraSegTrainer.test(cfg, model)["sem_seg"]
    for key in METRIC_KEYS:
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics[key])
        assert metrics[key] == pytest.approx(single[key], abs=1e-6), key
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    logged = [line for line in lines if "sem_seg/hIoU" in line]
    assert len(logged) == 1
    assert logged[0]["sem_seg/hIoU"] == pytest.approx(metrics["hIoU"])
    assert (out / "log.txt").is_file() and (out / "log.txt.rank1").is_file()
