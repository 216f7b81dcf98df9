"""tools/train_net.py: train -> checkpoint -> --eval-only reproduces metrics; --resume continues."""

from __future__ import annotations

from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402


def _train_net():
    return load_script("tools/train_net.py", "chimeraseg_train_net")


def _args(module, extra):
    from detectron2.engine import default_argument_parser

    return default_argument_parser().parse_args(["--config-file", SYNTHETIC_CONFIG, *extra])


def test_train_eval_only_round_trip_and_resume(tiny_opts, synthetic_root, tmp_path):
    from detectron2.engine import HookBase
    from detectron2.utils.events import get_event_storage

    from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg

    tn = _train_net()
    out = str(tmp_path / "run")
    opts = [*tiny_opts, "OUTPUT_DIR", out, "SOLVER.CHECKPOINT_PERIOD", "2", "SEED", "0"]
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "SOLVER.MAX_ITER", "2"])
    trainer = ChimeraSegTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trained = trainer.train()["sem_seg"]  # the evaluation after the last iteration
    weights = str(Path(out) / "model_final.pth")
    evaluated = tn.main(_args(tn, ["--eval-only", *opts, "MODEL.WEIGHTS", weights]))["sem_seg"]
    for key in ("sIoU", "uIoU", "hIoU", "mIoU", "hIoU@gamma=1.00"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6)

    # --resume: continues at iteration 2 with the K of iteration 2 (EventStorage drives K).
    seen: list[tuple[int, int]] = []

    class Record(HookBase):
        def before_step(self):
            it = get_event_storage().iter
            seen.append((it, self.trainer.model.model.criterion.losses["loss_sgd"].sgd.k_at(it)))

    resumed = ChimeraSegTrainer(
        get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "SOLVER.MAX_ITER", "3"])
    )
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    assert resumed.scheduler.last_epoch == 2
    resumed.register_hooks([Record()])
    resumed.train()
    distillation = resumed.model.model.criterion.losses["loss_sgd"].sgd
    assert seen == [(2, distillation.k_at(2))]
    sgd_cfg = resumed.cfg.MODEL.CHIMERASEG.SGD
    assert distillation.k_at(2) == round(sgd_cfg.K_INIT - sgd_cfg.K_STEP * 2)
