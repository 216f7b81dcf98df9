"""Mixed precision keeps the method's numbers: float32 islands under CPU autocast (docs/GPU.md).

CPU autocast (bfloat16 and float16) stands in for CUDA's: it lowers the same matmuls. The pseudo
masks, the prototypes and the training step's pseudo masks must equal their float32 values, and
no scatter-style sum may accumulate in half precision (an atomic half add on CUDA).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from chimeraseg_test_utils import build_tiny_model
from torch.utils._python_dispatch import TorchDispatchMode

import chimeraseg.modeling.pseudo_masks as pseudo_module
from chimeraseg.modeling.prototypes import prototype_table
from chimeraseg.modeling.pseudo_masks import SETTINGS, PseudoMaskConfig, generate_pseudo_masks

LOW_PRECISIONS = (torch.bfloat16, torch.float16)
aten = torch.ops.aten
_SCATTER_SUMS = (
    aten.index_add,
    aten.index_add_,
    aten.scatter_add,
    aten.scatter_add_,
    aten.scatter_reduce,
    aten.scatter_reduce_,
)


def _clustered(seed: int, noise: float, b: int = 2, d: int = 16, grid: int = 16) -> torch.Tensor:
    """``(B, D, grid, grid)`` teacher features: 4x4-cell blocks of 5 random centres plus noise."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, d, generator=gen)
    blocks = torch.randint(0, 5, (b, grid // 4, grid // 4), generator=gen)
    cells = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (B, grid, grid)
    return centres[cells].permute(0, 3, 1, 2) + noise * torch.randn(b, d, grid, grid, generator=gen)


def _labels(b: int = 2, size: int = 256) -> torch.Tensor:
    """``(B, S, S)`` seen ids 0..4 with the right two thirds ignored."""
    labels = torch.randint(0, 5, (b, size, size), generator=torch.Generator().manual_seed(1))
    labels[:, :, size // 3 :] = 255
    return labels


def _pseudo(feats: torch.Tensor, mode: str, dtype: torch.dtype | None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    text = {}
    if mode == "transductive":
        text = {"seen_text": torch.randn(5, 16, generator=gen)}
        text["unseen_text"] = torch.randn(3, 16, generator=gen)
    amp = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
    with amp:
        return generate_pseudo_masks(_labels(), feats, num_seen=5, mode=mode, **text).labels


@pytest.mark.parametrize("dtype", LOW_PRECISIONS)
@pytest.mark.parametrize("mode", SETTINGS)
@pytest.mark.parametrize("noise", [0.3, 1.0])
def test_pseudo_labels_under_autocast_equal_float32(dtype, mode, noise) -> None:
    feats = _clustered(0, noise)
    assert torch.equal(_pseudo(feats, mode, dtype), _pseudo(feats, mode, None))


def test_without_the_float32_island_bf16_autocast_changes_the_labels(monkeypatch) -> None:
    """Control: the same call with autocast left on inside gives other pseudo labels."""
    monkeypatch.setattr(pseudo_module, "float32_island", lambda device: contextlib.nullcontext())
    feats = _clustered(0, 1.0)
    assert not torch.equal(
        _pseudo(feats, "inductive", torch.bfloat16), _pseudo(feats, "inductive", None)
    )


@pytest.mark.parametrize("dtype", LOW_PRECISIONS)
def test_prototypes_sum_in_float32(dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(2, 8, 64, 112, generator=gen) + 3.0  # 7,168 positions per image
    labels = torch.randint(0, 3, (2, 64, 112), generator=gen)
    reference = prototype_table(features, labels, num_seen=3)
    with torch.autocast("cpu", dtype=dtype):
        table = prototype_table(features, labels, num_seen=3)
    assert torch.equal(table.means, reference.means) and torch.equal(
        table.present, reference.present
    )
    low = prototype_table(features.to(dtype), labels, num_seen=3)  # half features, float32 sums
    assert low.means.dtype == torch.float32
    exact = prototype_table(features.to(dtype).float(), labels, num_seen=3)
    assert torch.equal(low.means, exact.means)


class HalfAccumulationSpy(TorchDispatchMode):
    """Records scatter-style accumulations whose destination is bfloat16 / float16."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        packet = func.overloadpacket
        target = args[0] if args and isinstance(args[0], torch.Tensor) else None
        accumulates = packet in _SCATTER_SUMS
        if packet in (aten.index_put, aten.index_put_, aten._index_put_impl_):
            accumulates = bool(args[3] if len(args) > 3 else kwargs.get("accumulate", False))
        if packet is aten.bincount:
            target = args[1] if len(args) > 1 else kwargs.get("weights")
            accumulates = target is not None
        if accumulates and target is not None and target.dtype in LOW_PRECISIONS:
            self.found.append(f"{func} on {target.dtype}")
        return func(*args, **kwargs)


def test_spy_sees_a_half_index_add() -> None:
    with HalfAccumulationSpy() as spy:
        torch.zeros(2, 3, dtype=torch.bfloat16).index_add(
            0, torch.tensor([0, 0]), torch.ones(2, 3, dtype=torch.bfloat16)
        )
        torch.zeros(2, 3).index_add(0, torch.tensor([0, 0]), torch.ones(2, 3))
    assert len(spy.found) == 1


def _recorded_step(model: torch.nn.Module, dtype: torch.dtype | None) -> tuple[dict, torch.Tensor]:
    """One forward + backward; returns the losses and the pseudo labels the criterion got."""
    seen = []
    handle = model.criterion.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].pseudo_labels.clone())
    )
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 128, 128, generator=gen) * 255
    labels = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (2, 128, 128), generator=gen)]
    labels[:, :, 40:] = 255  # unseen pixels are ignore in training
    amp = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
    with HalfAccumulationSpy() as spy:
        with amp:
            losses = model.forward_train(images, labels, 0)
        sum(losses.values()).backward()
    handle.remove()
    assert spy.found == []
    return {k: v.detach() for k, v in losses.items()}, seen[0]


@pytest.mark.parametrize("dtype", LOW_PRECISIONS)
def test_training_step_under_autocast_keeps_the_pseudo_masks_and_the_losses(
    tiny_clip, dtype
) -> None:
    model = build_tiny_model(tiny_clip, pseudo_masks=PseudoMaskConfig(scales=(2, 4)))
    reference, reference_labels = _recorded_step(model, None)
    model.zero_grad()
    losses, labels = _recorded_step(model, dtype)
    assert torch.equal(labels, reference_labels)
    assert (labels >= 4).any() and (labels < 255).any()  # there were latent regions to keep
    for name, value in reference.items():
        torch.testing.assert_close(losses[name], value, rtol=5e-2, atol=1e-3)


@pytest.mark.parametrize("dtype", LOW_PRECISIONS)
def test_losses_of_float32_features_under_autocast_are_bit_identical(tiny_clip, dtype) -> None:
    """Every similarity of SGD, SAM and the segmentation loss is float32 under autocast."""
    from chimeraseg.modeling.losses.criterion import ChimeraSegCriterion, TrainingOutputs

    model = build_tiny_model(tiny_clip)
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(2, 32, 16, 16, generator=gen)
    labels = torch.randint(0, 7, (2, 64, 64), generator=gen)
    labels[labels >= 4] += 10  # latent labels 14..16 beside seen 0..3
    labels[:, :8] = 255
    small = labels[:, ::4, ::4]  # (2, 16, 16)
    cls = torch.nn.functional.normalize(torch.randn(2, 32, generator=gen), dim=-1)

    def losses(amp: contextlib.AbstractContextManager) -> dict[str, torch.Tensor]:
        with amp:
            outputs = TrainingOutputs(
                features=features,
                cls=cls,
                pseudo_labels=labels,
                prototypes=prototype_table(features, small, num_seen=4),
                classifier_text=model.seen_text,
                seen_text=model.seen_text,
                logit_tau=model.logit_tau,
            )
            criterion = ChimeraSegCriterion(model.settings.losses)
            torch.manual_seed(0)  # the same Gumbel noise (the global RNG: no loss seed here)
            return criterion(outputs, 0)

    reference = losses(contextlib.nullcontext())
    low = losses(torch.autocast("cpu", dtype=dtype))
    assert all(v > 0 for v in reference.values())
    for name, value in reference.items():
        assert torch.equal(low[name], value), name
