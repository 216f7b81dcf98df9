"""The GPU switches on a CUDA device (skipped without one; tools/gpu_suite.sh runs them).

Text embeddings on the GPU, the fused optimizer, uint8 copies from pinned memory, channels-last,
the compiled training step and the pseudo masks under bf16 / fp16 autocast.
"""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from chimeraseg_test_utils import SYNTHETIC_CONFIG  # noqa: E402

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402

pytestmark = [pytest.mark.detectron2, pytest.mark.cuda]


def _cfg(tiny_opts: list[str], *extra: str):
    return get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, "MODEL.DEVICE", "cuda", *extra])


def _model(cfg):
    from detectron2.modeling import build_model

    import chimeraseg.d2  # noqa: F401

    return build_model(cfg)


def _batch(pin: bool = True):
    from detectron2.data import DatasetCatalog

    from chimeraseg.d2.data import ZeroShotDatasetMapper

    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, ["INPUT.CROP.SIZE", "(64, 64)"])
    mapper = ZeroShotDatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get("synthetic_zs_train")[:2]]
    if pin:
        for x in batch:
            x["image"], x["sem_seg"] = x["image"].pin_memory(), x["sem_seg"].pin_memory()
    return batch


def _losses(model, batch) -> dict[str, float]:
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    with EventStorage(0):
        return {k: float(v.detach()) for k, v in model(batch).items()}


def test_text_tower_and_embeddings_live_on_the_gpu(tiny_opts, synthetic_root) -> None:
    model = _model(_cfg(tiny_opts))
    text_devices = {
        p.device.type for n, p in model.clip_model.named_parameters() if not n.startswith("visual.")
    }
    assert text_devices == {"cuda"}
    assert model.clip_model.visual.conv1.weight.is_cuda  # moved with the teacher sharing it
    assert model.vocabulary_embeddings.is_cuda and model.model.seen_text.is_cuda


def test_fused_adamw_steps_like_the_plain_kernel(tiny_opts, synthetic_root) -> None:
    from chimeraseg.d2.trainer import build_optimizer

    cfg = _cfg(tiny_opts)
    results = []
    for fused in (True, False):
        cfg.SOLVER.FUSED = fused
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 32).cuda()
        optimizer = build_optimizer(cfg, model)
        assert bool(optimizer.defaults.get("fused")) is fused
        for _ in range(3):
            model(torch.randn(8, 64, device="cuda")).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        results.append(model.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_pinned_uint8_batches_give_the_float32_inputs(tiny_opts, synthetic_root) -> None:
    model = _model(_cfg(tiny_opts)).train()
    pinned = _batch(pin=True)
    assert pinned[0]["image"].is_pinned() and pinned[0]["sem_seg"].dtype == torch.uint8
    wide = [{**x, "image": x["image"].float().cuda()} for x in pinned]  # the old path
    torch.testing.assert_close(
        model._images(pinned).tensor, model._images(wide).tensor, rtol=0, atol=0
    )


def test_channels_last_under_bf16_keeps_the_losses(tiny_opts, synthetic_root) -> None:
    batch = _batch()
    losses = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = _model(_cfg(tiny_opts, "MODEL.CHANNELS_LAST", str(channels_last))).train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses.append(_losses(model, batch))
    for name, value in losses[0].items():
        assert losses[1][name] == pytest.approx(value, rel=2e-2, abs=1e-3), name


def test_compiled_training_step_matches_eager_and_keeps_the_keys(tiny_opts, synthetic_root) -> None:
    from chimeraseg.d2.gpu_switches import compile_training_modules

    batch = _batch()
    # no dropout / stochastic depth: compiled kernels draw other random numbers than eager ones
    opts = ["MODEL.CHIMERASEG.DECODER.DROPOUT", "0.0"]
    opts += ["MODEL.CHIMERASEG.BACKBONE.DROP_PATH_RATE", "0.0"]
    torch.manual_seed(0)
    eager = _model(_cfg(tiny_opts, *opts)).train()
    torch.manual_seed(0)
    compiled = _model(_cfg(tiny_opts, *opts)).train()
    compile_training_modules(compiled)
    expected, got = _losses(eager, batch), _losses(compiled, batch)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_pseudo_masks_under_bf16_and_fp16_equal_float32(tiny_opts, synthetic_root) -> None:
    from chimeraseg.d2.cluster_check.amp_masks import compare_pseudo_masks

    model = _model(_cfg(tiny_opts)).train()
    result = compare_pseudo_masks(model, [_batch()], ["bf16", "fp16"])
    assert result["latent_pixels_fp32"] > 0
    for name in ("bf16", "fp16"):
        assert result["precisions"][name]["differing_pixels"] == 0, name
