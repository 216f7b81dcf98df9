"""Test-time augmentation: flip and multi-scale views, averaged logits, via TEST.AUG.*."""

from __future__ import annotations

import numpy as np
import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG
from PIL import Image

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from detectron2.modeling import DatasetMapperTTA  # noqa: E402

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402


def _setup(tiny_opts, extra):
    from detectron2.modeling import build_model

    import chimeraseg.d2  # noqa: F401
    from chimeraseg.d2.data import ZeroShotDatasetMapper

    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, *extra])
    model = build_model(cfg).eval()
    return cfg, model, ZeroShotDatasetMapper(cfg, is_train=False)


def _input(mapper, tmp_path, symmetric: bool) -> dict:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (96, 120, 3), dtype=np.uint8)
    if symmetric:
        image[:, 60:] = image[:, :60][:, ::-1]
    path = tmp_path / ("sym.png" if symmetric else "asym.png")
    Image.fromarray(image).save(path)
    return mapper({"file_name": str(path)})


def _plain(model, inp) -> torch.Tensor:
    with torch.no_grad():
        return model([inp])[0]["sem_seg"]


def test_detectron2_keys_and_defaults_are_used(tiny_opts, synthetic_root) -> None:
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts)
    assert not cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP and cfg.TEST.AUG.MAX_SIZE == 4000
    assert tuple(cfg.TEST.AUG.MIN_SIZES) == (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)


def test_flip_tta_of_a_flip_symmetric_image(tiny_opts, synthetic_root, tmp_path) -> None:
    from chimeraseg.d2.tta import SemanticSegmentorWithTTA

    cfg, model, mapper = _setup(
        tiny_opts, ["TEST.AUG.MIN_SIZES", "(160,)", "TEST.AUG.FLIP", "True"]
    )
    inp = _input(mapper, tmp_path, symmetric=True)
    plain = _plain(model, inp)
    tta = SemanticSegmentorWithTTA(model, cfg=cfg)([inp])[0]["sem_seg"]
    assert tta.shape == plain.shape == (12, 96, 120)
    # The mirrored view is the same image, so the two views are ``plain`` and its mirror undone:
    torch.testing.assert_close(tta, (plain + plain.flip(-1)) / 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tta, tta.flip(-1))  # the average of a symmetric image is symmetric
    # Equal to plain inference wherever plain inference is itself symmetric (its argmax mostly):
    agree = (plain.argmax(0) == plain.flip(-1).argmax(0)).float().mean()
    same = (tta.argmax(0) == plain.argmax(0)).float().mean()
    assert same >= agree - 1e-6


def test_flipped_views_are_flipped_back(tiny_opts, synthetic_root, tmp_path) -> None:
    """A per-pixel (mirror-equivariant) model: flip-TTA equals plain inference on any image."""
    from detectron2.modeling import DatasetMapperTTA

    from chimeraseg.d2.tta import SemanticSegmentorWithTTA

    cfg, _, mapper = _setup(tiny_opts, ["TEST.AUG.MIN_SIZES", "(160,)"])

    class PerPixel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = torch.nn.Conv2d(3, 4, 1)

        def forward(self, inputs):
            outs = []
            for x in inputs:
                size = (x["height"], x["width"])
                image = torch.nn.functional.interpolate(
                    x["image"][None].float(), size=size, mode="bilinear"
                )  # half-pixel sampling: mirror-equivariant
                outs.append({"sem_seg": self.mix(image)[0]})
            return outs

    inp = _input(mapper, tmp_path, symmetric=False)
    model = PerPixel()
    plain = model([inp])[0]["sem_seg"]
    tta = SemanticSegmentorWithTTA(model, DatasetMapperTTA(cfg), batch_size=2)([inp])[0]
    torch.testing.assert_close(tta["sem_seg"], plain.detach(), rtol=1e-3, atol=1e-3)
    assert not torch.allclose(plain, plain.flip(-1))  # so an un-flipped view would differ


def test_any_batch_size_equals_batch_one(tiny_opts, synthetic_root, tmp_path) -> None:
    """Three scales with flips: batching pads nothing (one image size per pass), so every batch
    size gives batch 1's average; padding the smaller scales to the largest changed it."""
    from chimeraseg.d2.tta import SemanticSegmentorWithTTA, same_size_chunks

    cfg, model, mapper = _setup(tiny_opts, ["TEST.AUG.MIN_SIZES", "(96, 128, 160)"])
    inp = _input(mapper, tmp_path, symmetric=False)
    sizes: list[set[tuple[int, int]]] = []

    def spy(module, args) -> None:
        sizes.append({tuple(x["image"].shape[-2:]) for x in args[0]})

    handle = model.register_forward_pre_hook(spy)
    one = SemanticSegmentorWithTTA(model, cfg=cfg, batch_size=1)([inp])[0]["sem_seg"]
    assert len(sizes) == 6 and len(set().union(*sizes)) == 3
    for batch_size in (2, 3, 4, 8):
        sizes.clear()
        got = SemanticSegmentorWithTTA(model, cfg=cfg, batch_size=batch_size)([inp])[0]
        assert all(len(s) == 1 for s in sizes) and len(sizes) == 3  # a scale and its mirror
        torch.testing.assert_close(got["sem_seg"], one, rtol=1e-5, atol=1e-5)
    handle.remove()
    views = DatasetMapperTTA(cfg)(inp)
    assert [len(c) for c in same_size_chunks(views, 3)] == [2, 2, 2]
    assert [len(c) for c in same_size_chunks(views, 1)] == [1] * 6
    padded = _mean_of_padded_batch(model, views)  # what one padded pass of all views gave
    assert not torch.allclose(padded, one, rtol=1e-3, atol=1e-3)


def _mean_of_padded_batch(model, views) -> torch.Tensor:
    """The views' average logits from a single forward pass over all of them (padded batch)."""
    from fvcore.transforms import HFlipTransform

    with torch.no_grad():
        outputs = model(views)
    total = 0
    for view, output in zip(views, outputs):
        logits = output["sem_seg"]
        if any(isinstance(t, HFlipTransform) for t in view["transforms"].transforms):
            logits = logits.flip(dims=[-1])
        total = total + logits
    return total / len(views)


def test_one_scale_at_the_test_size_equals_plain(tiny_opts, synthetic_root, tmp_path) -> None:
    from chimeraseg.d2.tta import SemanticSegmentorWithTTA

    size = ["TEST.AUG.MIN_SIZES", "(160,)", "TEST.AUG.MAX_SIZE", "1024", "TEST.AUG.FLIP", "False"]
    cfg, model, mapper = _setup(tiny_opts, size)
    assert cfg.INPUT.MIN_SIZE_TEST == 160  # scale 1.0
    inp = _input(mapper, tmp_path, symmetric=False)
    tta = SemanticSegmentorWithTTA(model, cfg=cfg)([inp])[0]["sem_seg"]
    torch.testing.assert_close(tta, _plain(model, inp), rtol=0, atol=0)


def test_trainer_evaluates_with_tta_when_enabled(tiny_opts, synthetic_root, monkeypatch) -> None:
    from chimeraseg.d2 import ChimeraSegTrainer
    from chimeraseg.d2 import tta as tta_module

    aug = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(128, 160)", "TEST.AUG.FLIP", "True"]
    cfg, model, _ = _setup(tiny_opts, aug)
    calls = []
    original = tta_module.SemanticSegmentorWithTTA._one

    def counting(self, inp):
        calls.append(len(self.tta_mapper(inp)))
        return original(self, inp)

    monkeypatch.setattr(tta_module.SemanticSegmentorWithTTA, "_one", counting)
    results = ChimeraSegTrainer.test(cfg, model)
    assert calls and set(calls) == {4}  # 2 sizes x (plain + mirrored)
    assert np.isfinite(results["sem_seg"]["mIoU"])
