"""ChimeraSegModel: training losses, edge cases, checkpoints, inference."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from chimeraseg_test_utils import TINY_SEEN as SEEN
from chimeraseg_test_utils import build_tiny_model
from torch import nn

from chimeraseg.modeling import (
    ChimeraSegModel,
    InferenceConfig,
    LossSettings,
    PseudoMaskConfig,
    SelectiveGlobalDistillation,
    SGDSettings,
)


def _losses(**weights: float) -> LossSettings:
    return LossSettings(sgd=SGDSettings(k_init=50, k_step=0.1), seed=0).with_weights(**weights)


def _model(clip: nn.Module, losses: LossSettings | None = None, **kwargs):
    kwargs.setdefault("pseudo_masks", PseudoMaskConfig(scales=(2, 4), kmeans_iters=3, min_area=1))
    return build_tiny_model(clip, losses=losses or _losses(), **kwargs)


def _batch(b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(b, 3, 64, 64) * 255
    labels = torch.tensor(SEEN)[torch.randint(0, 4, (b, 64, 64))]
    labels[:, 32:, :40] = 255
    return images, labels


def _train_step(model: ChimeraSegModel, images, labels, iteration: int = 0) -> dict:
    model.train()
    losses = model.forward_train(images, labels, iteration)
    assert set(losses) == {"loss_seg", "loss_sgd", "loss_sam"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total = sum(losses.values())
    total.backward()
    return losses


@pytest.mark.parametrize("setting", ["inductive", "transductive"])
def test_forward_train_and_gradients(tiny_clip: nn.Module, setting: str) -> None:
    model = _model(tiny_clip, setting=setting)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    head_before = model.head.mlp[0].weight.detach().clone()
    losses = _train_step(model, *_batch())
    assert losses["loss_seg"] > 0 and losses["loss_sgd"] > 0 and losses["loss_sam"] > 0
    assert model.head.mlp[0].weight.grad.abs().sum() > 0
    assert model.backbone.conv.weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.teacher.parameters())
    # A step over every parameter (weight decay included) moves the student, never the teacher.
    torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5).step()
    assert not torch.equal(model.head.mlp[0].weight, head_before)
    after = model.teacher.state_dict()
    assert all(torch.equal(after[k], v) for k, v in teacher_before.items())


def test_weights_zero_skip_losses(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip, losses=_losses(loss_sgd=0.0, loss_sam=0.0))
    assert list(model.criterion.losses) == ["loss_seg"]  # weight 0: not built, not computed
    losses = _train_step(model, *_batch())
    assert losses["loss_sgd"].item() == 0.0 and losses["loss_sam"].item() == 0.0


@pytest.mark.parametrize(
    "case", ["no_seen", "no_ignore", "all_ignore", "batch_of_one", "tiny_latent", "k_gt_hw"]
)
def test_edge_cases_finite(tiny_clip: nn.Module, case: str) -> None:
    model = _model(tiny_clip)
    images, labels = _batch(1 if case == "batch_of_one" else 2)
    iteration = 0
    if case == "no_seen":
        labels[0] = 255
        labels[0, :20] = 255
    elif case == "no_ignore":
        labels[labels == 255] = 0
    elif case == "all_ignore":
        labels[:] = 255
        model.pseudo_mask_config = PseudoMaskConfig(min_area=10**6)  # nothing survives
    elif case == "tiny_latent":
        labels[labels == 255] = 0
        labels[:, :16, :16] = 255  # one teacher cell; its latent region may vanish at h×w
        model.pseudo_mask_config = PseudoMaskConfig(scales=(2,), min_area=1)
    elif case == "k_gt_hw":
        sgd = SelectiveGlobalDistillation(SGDSettings(k_init=10**6, mode="increase"))
        model.criterion.losses["loss_sgd"].sgd = sgd
        iteration = 10
    losses = _train_step(model, images, labels, iteration)
    if case == "all_ignore":
        assert losses["loss_seg"].item() == 0.0
    if case == "batch_of_one":
        assert losses["loss_sam"].item() == 0.0


class _Recorder(nn.Module):
    """Calls the real criterion and keeps what the model handed to it."""

    def __init__(self, criterion: nn.Module) -> None:
        super().__init__()
        self.criterion, self.outputs = criterion, []

    def forward(self, outputs, iteration: int) -> dict:
        self.outputs.append(outputs)
        return self.criterion(outputs, iteration)


def test_latent_region_without_prototype_is_ignored(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip)
    recorder = _Recorder(model.criterion)
    model.criterion = recorder
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[0, 1, 1] = 255  # only pixel (1,1): never sampled by the nearest downsampling
    model.pseudo_mask_config = PseudoMaskConfig(region_ignore_fraction=0.0, min_area=1)
    losses = _train_step(model, torch.rand(1, 3, 64, 64) * 255, labels)
    (outputs,) = recorder.outputs
    pseudo = outputs.pseudo_labels
    latent = (pseudo >= len(SEEN)) & (pseudo != 255)
    assert latent.nonzero().tolist() == [[0, 1, 1]]  # the pixel did get a latent label
    assert outputs.prototypes[0].latent.shape[0] == 0  # but its region has no prototype
    hidden = dataclasses.replace(outputs, pseudo_labels=pseudo.masked_fill(latent, 255))
    lseg = recorder.criterion.losses["loss_seg"]  # the registered, unweighted Lseg
    ignored = lseg(hidden, 0)
    assert torch.equal(lseg(outputs, 0), ignored)
    seg_weight = recorder.criterion.weight_dict["loss_seg"]
    torch.testing.assert_close(losses["loss_seg"], seg_weight * ignored)


def test_label_errors(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip)
    images, labels = _batch()
    labels[0, 0, 0] = 3  # unseen id leaked into training
    with pytest.raises(ValueError, match="unseen class id 3"):
        model.forward_train(images, labels, 0)
    labels[0, 0, 0] = 9
    with pytest.raises(ValueError, match="label value 9"):
        model.forward_train(images, labels, 0)
    with pytest.raises(ValueError, match=r"seen_text \(4, 16\) must be \(4, 32\)"):
        _model(tiny_clip, text=torch.randn(6, 16))


@pytest.mark.parametrize("proj", ["frozen", "learnable"])
def test_state_dict_omits_frozen_clip_and_loads_strict(tiny_clip: nn.Module, proj: str) -> None:
    model = _model(tiny_clip, head_options={"proj": proj, "norm": "LN_clip"})
    state = model.state_dict()
    assert not any(k.startswith("teacher.") for k in state)
    assert not any(k.startswith("head.vencoder.") or k.startswith("head.norm.") for k in state)
    assert ("head.proj.weight" in state) == (proj == "learnable")
    assert not any("text" in k or "label_lut" in k for k in state)
    assert "head.mlp.0.weight" in state and "backbone.conv.weight" in state
    fresh = _model(tiny_clip, head_options={"proj": proj, "norm": "LN_clip"})
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(fresh.head.mlp[0].weight, model.head.mlp[0].weight)
    wrapper = nn.Module()
    wrapper.model = fresh  # nested prefixes work too
    assert not any(k.startswith("model.teacher.") for k in wrapper.state_dict())
    wrapper.load_state_dict(wrapper.state_dict(), strict=True)


def test_bn_state_is_saved(tiny_clip: nn.Module) -> None:
    state = _model(tiny_clip).state_dict()
    assert "head.norm.bn.running_mean" in state and "head.norm.bn.weight" in state


def test_forward_test_whole_and_slide(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip, with_teacher=False).eval()
    images = torch.rand(2, 3, 64, 96) * 255
    vocab = torch.randn(6, 32)
    window = InferenceConfig(mode="slide", slide_crop=(64, 64), slide_stride=(32, 32))
    with torch.inference_mode():
        whole = model.forward_test(images, vocab)
        slide = model.forward_test(images, vocab, window)
    assert whole.shape == slide.shape == (2, 6, 64, 96)
    # Reference: cosine of the CSH output and the text at h×w, upsampled once.
    with torch.no_grad():
        fc = model.clip_features(images)
    ref = torch.einsum("bdhw,nd->bnhw", F.normalize(fc, dim=1), F.normalize(vocab, dim=-1)) / 0.07
    ref = F.interpolate(ref, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(whole, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="forward_train needs a teacher and a criterion"):
        model.forward_train(*_batch(), 0)


def test_slide_single_window_equals_whole(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip).eval()
    images, vocab = torch.rand(1, 3, 64, 64) * 255, torch.randn(4, 32)
    with torch.no_grad():
        whole = model.forward_test(images, vocab)
        window = InferenceConfig(mode="slide", slide_crop=(128, 128), slide_stride=(64, 64))
        slide = model.forward_test(images, vocab, window)
    torch.testing.assert_close(slide, whole)


def test_frozen_modules_eval_after_model_train(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip).train()
    assert not model.teacher.training and not model.head.proj.training
    assert model.head.norm.training and model.head.mlp.training


def test_training_after_inference_mode_forward(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip).eval()
    with torch.inference_mode():
        model.forward_test(torch.rand(1, 3, 64, 64) * 255, torch.randn(4, 32))
    _train_step(model, *_batch())


def test_criterion_weight_dict_scales_each_loss(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip).train()
    images, labels = _batch()
    torch.manual_seed(0)
    base = model.forward_train(images, labels, 0)
    model.criterion.weight_dict.update(loss_seg=2.0, loss_sgd=3.0, loss_sam=0.25)
    model.criterion.losses["loss_sgd"]._generators = {}  # the same Gumbel noise again
    torch.manual_seed(0)
    scaled = model.forward_train(images, labels, 0)
    factors = {"loss_seg": 2.0, "loss_sgd": 3.0, "loss_sam": 0.25 / 0.5}
    for name, factor in factors.items():
        torch.testing.assert_close(scaled[name], factor * base[name], rtol=1e-5, atol=1e-7)
