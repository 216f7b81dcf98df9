"""SOLVER.AMP.ENABLED: one bfloat16 mixed-precision training step on the CPU, against float32."""

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


def _one_step(opts: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
    """Trains one iteration; returns the pseudo labels the criterion got and the losses."""
    from chimeraseg.d2 import ChimeraSegTrainer

    trainer = ChimeraSegTrainer(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))
    pseudo: list[torch.Tensor] = []
    criterion = trainer.model.model.criterion
    criterion.register_forward_pre_hook(lambda m, args: pseudo.append(args[0].pseudo_labels))
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.histories()
    return pseudo[0], {k: h.latest() for k, h in history.items() if k.startswith("loss_")}


def test_amp_step_keeps_the_float32_pseudo_masks_and_losses(tiny_opts, synthetic_root, tmp_path):
    """Same data, weights and noise: the bf16 step's pseudo masks are the float32 step's, pixel
    for pixel (teacher and pseudo masks run in float32), and its losses are close to float32's
    (the student and the head run in bf16)."""
    base = [*tiny_opts, "SOLVER.MAX_ITER", "1", "SEED", "0"]
    fp32_labels, fp32_losses = _one_step([*base, "OUTPUT_DIR", str(tmp_path / "fp32")])
    amp = ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16"]
    amp_labels, amp_losses = _one_step([*base, *amp, "OUTPUT_DIR", str(tmp_path / "bf16")])
    num_seen = 9  # the synthetic split: latent labels start after its 9 seen classes
    assert ((fp32_labels >= num_seen) & (fp32_labels != 255)).any()  # latent regions to compare
    assert torch.equal(amp_labels, fp32_labels)
    assert set(amp_losses) == set(fp32_losses) == {"loss_seg", "loss_sgd", "loss_sam"}
    # Relative tolerances: SGD's InfoNCE divides cosines by tau = 0.07, amplifying the bf16
    # student's rounding 14 times (tests/modeling/test_core_amp.py: the losses themselves are
    # float32 under autocast, bit for bit).
    tolerance = {"loss_seg": 0.05, "loss_sgd": 0.3, "loss_sam": 0.05}
    for name, value in fp32_losses.items():
        assert math.isclose(amp_losses[name], value, rel_tol=tolerance[name], abs_tol=1e-3), (
            name,
            value,
            amp_losses[name],
        )


def test_float16_on_cpu_is_refused_naming_the_key(tiny_opts, synthetic_root) -> None:
    from chimeraseg.d2.amp import amp_precision

    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, "SOLVER.AMP.ENABLED", "True"])
    with pytest.raises(ValueError, match=r"SOLVER.AMP.PRECISION = 'float16' needs a CUDA"):
        amp_precision(cfg)
    cfg.SOLVER.AMP.PRECISION = "int8"
    with pytest.raises(ValueError, match=r"SOLVER.AMP.PRECISION = 'int8' is not one of"):
        amp_precision(cfg)
