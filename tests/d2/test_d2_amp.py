"""SOLVER.AMP.ENABLED: one bfloat16 mixed-precision training step on the CPU."""

from __future__ import annotations

import math

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from chimeraseg_test_utils import SYNTHETIC_CONFIG  # noqa: E402

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402


def test_amp_step_on_cpu_autocasts_and_has_finite_losses(tiny_opts, synthetic_root, tmp_path):
    from chimeraseg.d2 import ChimeraSegTrainer
    from chimeraseg.d2.amp import DeviceAMPTrainer

    opts = [*tiny_opts, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1", "SEED", "0",
            "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16"]  # fmt: skip
    trainer = ChimeraSegTrainer(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))
    assert isinstance(trainer._trainer, DeviceAMPTrainer)
    assert not trainer._trainer.grad_scaler.is_enabled()  # bfloat16 needs no loss scaling
    decoder_dtypes: list[torch.dtype] = []
    decoder = trainer.model.model.decoder
    decoder.register_forward_hook(lambda m, i, o: decoder_dtypes.append(o.dtype))
    before = [p.detach().clone() for p in decoder.parameters()]
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert decoder_dtypes and decoder_dtypes[0] == torch.bfloat16
    history = trainer.storage.histories()
    losses = {k: h.latest() for k, h in history.items() if k.startswith("loss_")}
    assert set(losses) == {"loss_seg", "loss_sgd", "loss_sam"}
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert math.isfinite(history["total_loss"].latest())
    after = list(decoder.parameters())
    assert all(p.dtype == torch.float32 for p in after)  # master weights stay float32
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # the step updated them


def test_float16_on_cpu_is_refused_naming_the_key(tiny_opts, synthetic_root) -> None:
    from chimeraseg.d2.amp import amp_precision

    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, "SOLVER.AMP.ENABLED", "True"])
    with pytest.raises(ValueError, match=r"SOLVER.AMP.PRECISION = 'float16' needs a CUDA"):
        amp_precision(cfg)
    cfg.SOLVER.AMP.PRECISION = "int8"
    with pytest.raises(ValueError, match=r"SOLVER.AMP.PRECISION = 'int8' is not one of"):
        amp_precision(cfg)
