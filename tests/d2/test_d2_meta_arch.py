"""Meta-architecture: one training iteration, inference shapes, checkpoint verification."""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from chimeraseg_test_utils import SYNTHETIC_CONFIG  # noqa: E402

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402


def _model(opts):
    from detectron2.modeling import build_model

    import chimeraseg.d2  # noqa: F401

    return build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))


def _batch(train: bool):
    from detectron2.data import DatasetCatalog

    from chimeraseg.d2.data import ZeroShotDatasetMapper

    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, ["INPUT.CROP.SIZE", "(64, 64)"])
    name = "synthetic_zs_train" if train else "synthetic_zs_val"
    mapper = ZeroShotDatasetMapper(cfg, is_train=train)
    return [mapper(d) for d in DatasetCatalog.get(name)[:2]]


def test_one_training_iteration_has_finite_losses_and_gradients(tiny_opts, synthetic_root):
    from detectron2.utils.events import EventStorage

    model = _model(tiny_opts).train()
    with EventStorage(7):
        losses = model(_batch(train=True))
    assert set(losses) == {"loss_seg", "loss_sgd", "loss_sam"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.model.head.mlp[0].weight.grad.abs().sum() > 0
    assert model.model.backbone.body.patch_embed1.proj.weight.grad is not None


def test_training_passes_the_valid_mask_of_each_input(tiny_opts, synthetic_root, monkeypatch):
    from detectron2.structures import ImageList
    from detectron2.utils.events import EventStorage

    from chimeraseg.d2.meta_arch import valid_pixel_mask

    model = _model(tiny_opts).train()
    captured = {}

    def forward_train(images, labels, iteration, valid=None):
        captured["valid"], captured["shape"] = valid, labels.shape
        return {}

    monkeypatch.setattr(model.model, "forward_train", forward_train)
    batch = _batch(train=True)
    batch[0]["valid_hw"] = (40, 24)
    batch[1].pop("valid_hw")
    batch[1]["image"], batch[1]["sem_seg"] = batch[1]["image"][:, :48], batch[1]["sem_seg"][:48]
    with EventStorage(0):
        model(batch)
    valid = captured["valid"]
    assert valid.shape == captured["shape"] and valid.dtype == torch.bool
    assert int(valid[0].sum()) == 40 * 24 and bool(valid[0, :40, :24].all())
    assert int(valid[1].sum()) == 48 * 64 and bool(valid[1, :48].all())  # batch padding: False
    images = ImageList.from_tensors([b["image"].float() for b in batch])
    batch[0]["valid_hw"] = (65, 10)
    with pytest.raises(
        ValueError, match=r"valid_hw=\(65, 10\) must be positive and within the image size"
    ):
        valid_pixel_mask(batch, images)


def test_inference_returns_unbiased_logits_at_original_size(tiny_opts, synthetic_root):
    model = _model(tiny_opts).eval()
    batch = _batch(train=False)
    with torch.no_grad():
        out = model(batch)
    assert out[0]["sem_seg"].shape == (12, batch[0]["height"], batch[0]["width"])
    model.set_vocabulary(["cat", "grass", "sky"], [0])
    with torch.no_grad():
        assert model(batch[:1])[0]["sem_seg"].shape[0] == 3
    assert model.unseen_mask.tolist() == [True, False, False]


def test_checkpoint_with_other_clip_or_vocabulary_is_refused(tiny_opts, synthetic_root, tmp_path):
    from chimeraseg.d2 import ChimeraSegCheckpointer

    model = _model(tiny_opts)
    ChimeraSegCheckpointer(model, str(tmp_path)).save("m")
    path = str(tmp_path / "m.pth")
    ChimeraSegCheckpointer(_model(tiny_opts)).load(path)  # same CLIP: fine
    other = _model(tiny_opts + ["MODEL.CLIP.RANDOM_INIT_SEED", "1"])
    with pytest.raises(ValueError, match="random_init_seed: checkpoint=0 vs loaded=1"):
        ChimeraSegCheckpointer(other).load(path)
    data = torch.load(path, weights_only=False)
    data["chimeraseg"]["vocabulary"][0] = "lawn"
    torch.save(data, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match="lawn.*grass"):
        ChimeraSegCheckpointer(_model(tiny_opts)).load(str(tmp_path / "renamed.pth"))


def test_optimizer_multipliers_and_poly_schedule(tiny_opts, synthetic_root):
    from chimeraseg.d2.trainer import build_lr_scheduler, build_optimizer

    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts)
    model = _model(tiny_opts)
    opt = build_optimizer(cfg, model)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    base = cfg.SOLVER.BASE_LR
    assert lr_of[id(model.model.head.mlp[0].weight)] == pytest.approx(10 * base)
    assert lr_of[id(model.model.decoder.fuse_conv.weight)] == pytest.approx(10 * base)
    assert lr_of[id(model.model.backbone.body.patch_embed1.proj.weight)] == pytest.approx(base)
    assert wd_of[id(model.model.decoder.fuse_bn.weight)] == 0.0
    assert wd_of[id(model.model.head.mlp[0].weight)] == cfg.SOLVER.WEIGHT_DECAY
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])
    sched = build_lr_scheduler(cfg, opt)
    factors = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        factors.append(opt.param_groups[0]["lr"] / sched.base_lrs[0])
        opt.step()
        sched.step()
    warm, total = cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.MAX_ITER
    assert factors[0] == pytest.approx(cfg.SOLVER.WARMUP_FACTOR, rel=1e-3)
    assert factors[warm + 10] == pytest.approx(1 - (warm + 10) / total, rel=1e-6)
    assert factors[-1] < factors[warm]


def test_inference_speed_keys_reach_the_core(tiny_opts, synthetic_root):
    model = _model(tiny_opts + ["TEST.CSH_DOWNSAMPLE", "2", "TEST.CSH_CHUNK_TOKENS", "64"])
    assert model.model.inference.head_downsample == 2
    assert model.model.inference.chunk_tokens == 64
    default = _model(tiny_opts).model.inference
    assert (default.head_downsample, default.chunk_tokens, default.mode) == (1, 1024, "whole")


def test_crop_and_resize_matches_detectron2_and_skips_equal_size_resampling():
    from detectron2.modeling.postprocessing import sem_seg_postprocess

    from chimeraseg.d2.meta_arch import crop_and_resize

    maps = torch.randn(5, 64, 96)  # (C, Hp, Wp): a 50x90 image padded to 64x96
    for output in [(50, 90), (100, 180), (37, 61)]:
        expected = sem_seg_postprocess(maps, (50, 90), *output)
        torch.testing.assert_close(crop_and_resize(maps, (50, 90), output), expected)
    same = crop_and_resize(maps, (50, 90), (50, 90))
    assert same.data_ptr() == maps.data_ptr()  # a view of the crop: nothing was resampled


def test_inference_resamples_the_head_logits_once_to_the_output_size(tiny_opts, synthetic_root):
    from chimeraseg.modeling.inference import resize_logits

    model = _model(tiny_opts).eval()
    image = torch.randint(0, 256, (3, 50, 90)).float()  # padded to 64x96 in the batch
    with torch.no_grad():
        equal = model([{"image": image}])[0]["sem_seg"]
        resized = model([{"image": image, "height": 37, "width": 61}])[0]["sem_seg"]
        padded = model._images([{"image": image}]).tensor  # (1, 3, 64, 96)
        text = model.vocabulary_embeddings
        full = model.model.forward_test(padded, text)[0]  # (N, 64, 96)
        low = model.model.forward_test(padded, text, upsample=False)[0]  # (N, 16, 24)
    n = len(model.vocabulary)
    assert low.shape == (n, 16, 24)
    torch.testing.assert_close(equal, full[:, :50, :90], rtol=0, atol=0)  # unchanged values
    assert resized.shape == (n, 37, 61) and resized.is_contiguous()
    torch.testing.assert_close(resized, resize_logits(low, (64, 96), (50, 90), (37, 61)))


def test_bfloat16_inference_runs_the_student_in_bfloat16_and_returns_float32_logits(
    tiny_opts, synthetic_root
):
    model = _model(tiny_opts + ["TEST.AMP.ENABLED", "True"]).eval()
    assert model.model.inference.precision == torch.bfloat16
    seen = []
    model.model.backbone.register_forward_hook(
        lambda module, args, out: seen.append(next(iter(out.values())).dtype)
    )
    batch = _batch(train=False)
    with torch.no_grad():
        low = model(batch)[0]["sem_seg"]
    assert seen == [torch.bfloat16]  # autocast reached the student
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    full = _model(tiny_opts).eval()
    full.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference = full(batch)[0]["sem_seg"]
    assert low.shape == reference.shape
    # Same weights: bfloat16 moves the logits a little (tiny random model, so no agreement target).
    assert (low - reference).abs().max() < 0.1 * reference.abs().max()


def test_float16_inference_on_the_cpu_is_refused_naming_the_key(tiny_opts, synthetic_root):
    with pytest.raises(ValueError, match="TEST.AMP.PRECISION = 'float16' needs a CUDA"):
        _model(tiny_opts + ["TEST.AMP.ENABLED", "True", "TEST.AMP.PRECISION", "float16"])
    with pytest.raises(ValueError, match="TEST.AMP.PRECISION"):
        _model(tiny_opts + ["TEST.AMP.PRECISION", "half"])


class _HandWrittenPoly:
    """The schedule's factor as the trainer computed it before fvcore's scheduler was used."""

    def __init__(self, power: float) -> None:
        self.power = power

    def __call__(self, where: float) -> float:
        return max((1.0 - where) ** self.power, 0.0)


@pytest.mark.parametrize("power", [1.0, 0.9, 2.0])
def test_poly_schedule_equals_the_hand_written_one(power: float) -> None:
    from detectron2.solver import LRMultiplier, WarmupParamScheduler

    from chimeraseg.d2.trainer import build_lr_scheduler

    cfg = get_chimeraseg_cfg(opts=["SOLVER.MAX_ITER", "200", "SOLVER.WARMUP_ITERS", "30"])
    cfg.SOLVER.POLY_LR_POWER = power
    params = [torch.nn.Parameter(torch.zeros(1))]
    new_opt, old_opt = torch.optim.SGD(params, lr=1.0), torch.optim.SGD(params, lr=1.0)
    new = build_lr_scheduler(cfg, new_opt)
    warmup = WarmupParamScheduler(_HandWrittenPoly(power), 1e-6, 30 / 200, "linear")
    old = LRMultiplier(old_opt, multiplier=warmup, max_iter=200)
    for it in range(201):  # t = 0 .. T: the trainer's last step evaluates the schedule at T
        assert new_opt.param_groups[0]["lr"] == pytest.approx(
            old_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15
        ), it
        if it < 200:
            new.step()
            old.step()
