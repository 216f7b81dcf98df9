"""SGD's Gumbel top-K selection on large grids, in bf16, across devices, and its InfoNCE over the
gathered batch (one process: the gather is replaced by a fake that adds another rank's rows)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import chimeraseg.modeling.losses.selective_global_distillation as sgd_module
from chimeraseg.modeling.losses import SelectiveGlobalDistillation
from chimeraseg.modeling.losses.outputs import TrainingOutputs
from chimeraseg.modeling.losses.selective_global_distillation import SGDLoss
from chimeraseg.modeling.settings import LossSettings, SGDSettings


def _inputs(b: int, d: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, D, h, w)`` features and ``(B, D)`` unit CLS rows."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(b, d, h, w, generator=g)
    cls = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    return features, cls


def _perturbed_scores(features: torch.Tensor, cls: torch.Tensor, seed: int) -> torch.Tensor:
    """``(B, h·w)`` float32 ``S + g`` with the noise a generator seeded ``seed`` draws."""
    b, d = features.shape[:2]
    scores = torch.einsum("bdn,bd->bn", features.flatten(2).float(), cls.float()) / d**0.5
    noise = sgd_module._gumbel_noise(scores.shape, torch.Generator().manual_seed(seed), "cpu")
    return scores + noise


def _pooled_from(features: torch.Tensor, cls: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` ``W'ᵀFk`` of the ``(B, K)`` positions ``top``."""
    b, d = features.shape[:2]
    tokens = features.flatten(2).transpose(1, 2)  # (B, h·w, D)
    selected = tokens.gather(1, top.unsqueeze(-1).expand(b, top.shape[1], d))  # (B, K, D)
    weights = torch.softmax(torch.einsum("bkd,bd->bk", selected, cls) / d**0.5, dim=1)
    return torch.einsum("bk,bkd->bd", weights, selected)


def test_selection_is_the_top_k_of_perturbed_scores_where_the_softmax_underflows() -> None:
    features, cls = _inputs(2, 8, 128, 128)  # 16,384 positions, the paper's 512² crop
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=9000, mode="none"))
    pooled = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(5))
    perturbed = _perturbed_scores(features, cls, seed=5)
    top = perturbed.topk(9000, dim=1).indices
    torch.testing.assert_close(pooled, _pooled_from(features, cls, top), rtol=1e-5, atol=1e-6)
    # The control that must fail: ranking W itself picks among weights that are exactly 0.
    weights = torch.softmax(perturbed / sgd.tau, dim=1)
    assert (weights == 0).sum(dim=1).min() > 9000
    by_weight = _pooled_from(features, cls, weights.topk(9000, dim=1).indices)
    assert (pooled - by_weight).abs().max() > 1e-3


def test_bf16_features_are_ranked_in_float32() -> None:
    features, cls = _inputs(64, 4, 64, 64, seed=1)
    features = features.bfloat16()  # cls stays float32, as the teacher gives it
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=1, mode="none"))
    pooled = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(2))
    assert pooled.dtype == torch.bfloat16
    perturbed = _perturbed_scores(features, cls, seed=2)  # (B, h·w) float32
    best = perturbed.argmax(dim=1)  # (B,)
    tokens = features.flatten(2).transpose(1, 2)  # (B, h·w, D)
    assert torch.equal(pooled, tokens[torch.arange(64), best])  # K = 1: Fg is that position
    bf16_best = perturbed.bfloat16().argmax(dim=1)
    assert not torch.equal(bf16_best, best)  # control: a bf16 ranking picks other positions


def test_features_on_another_device_draw_noise_there() -> None:
    """The meta device stands in for a GPU: no CPU round trip and no draw from the CPU RNG."""
    features = torch.empty(2, 4, 3, 3, device="meta")
    cls = torch.empty(2, 4, device="meta")
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=4, mode="none"))
    cpu_rng = torch.random.get_rng_state()
    assert sgd(features, cls, 0, gather=False).device.type == "meta"  # global RNG of the device
    assert torch.equal(torch.random.get_rng_state(), cpu_rng)
    loss = sgd(features, cls, 0, generator=torch.Generator().manual_seed(0), gather=False)
    assert loss.device.type == "meta"  # CPU generator: noise moved to the features' device


def test_gumbel_noise_device_and_generator() -> None:
    assert sgd_module._gumbel_noise((2, 3), None, torch.device("meta")).device.type == "meta"
    noise = sgd_module._gumbel_noise((2, 3), torch.Generator().manual_seed(4), torch.device("meta"))
    uniform = torch.rand((2, 3), generator=torch.Generator().manual_seed(4))
    assert noise.device.type == "cpu"  # drawn on the generator's device
    torch.testing.assert_close(noise, -torch.log(-torch.log(uniform)))


def test_gumbel_noise_is_finite_where_the_uniform_draw_is_0_or_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sgd_module.torch, "rand", lambda *a, **k: torch.tensor([0.0, 1.0, 0.5]))
    noise = sgd_module._gumbel_noise((3,), None, torch.device("cpu"))
    tiny, eps = torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).eps
    expected = -torch.log(-torch.log(torch.tensor([tiny, 1.0 - eps, 0.5])))
    assert torch.isfinite(noise).all()
    torch.testing.assert_close(noise, expected)


@pytest.mark.parametrize("gather", [None, True, False])
def test_infonce_uses_the_gathered_rows_with_this_process_offset(
    monkeypatch: pytest.MonkeyPatch, gather: bool | None
) -> None:
    features, cls = _inputs(3, 8, 4, 4)
    others = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(9)), dim=-1)
    monkeypatch.setattr(sgd_module, "all_gather_rows", lambda rows: (torch.cat([others, rows]), 5))
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=6, mode="none"))
    options = {} if gather is None else {"gather": gather}  # None: the default, which gathers
    loss = sgd(features, cls, 0, generator=torch.Generator().manual_seed(1), **options)
    pooled = F.normalize(sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(1)))
    if gather is False:
        rows, own = cls, torch.arange(3)
    else:  # this process's rows follow the other process's 5
        rows, own = torch.cat([others, cls]), torch.arange(3) + 5
    expected = F.cross_entropy(pooled @ rows.t() / sgd.tau, own)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize(
    ("features", "cls"), [((2, 4, 3), (2, 4)), ((2, 4, 3, 3), (2, 5)), ((2, 4, 3, 3), (3, 4))]
)
def test_forward_names_both_shapes_when_either_is_wrong(features: tuple, cls: tuple) -> None:
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=2, mode="none"))
    message = (
        f"SelectiveGlobalDistillation: features {features} must be (B, D, h, w) and cls {cls} "
        "must be (B, D)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        sgd(torch.zeros(features), torch.zeros(cls), 0)


def _outputs(features: torch.Tensor, cls: torch.Tensor, valid: torch.Tensor) -> TrainingOutputs:
    empty = torch.zeros(0, cls.shape[1])
    labels = torch.zeros(features.shape[0], 4, 4, dtype=torch.long)
    return TrainingOutputs(features, cls, labels, [], empty, empty, 0.07, valid)


def test_sgd_loss_passes_the_valid_mask_and_seeds_its_generator_per_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    features, cls = _inputs(2, 8, 4, 4)
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    valid[:, :2, :2] = True
    features[:, :, 2:, :] *= 1e3  # padding that would dominate the pooled features if selected
    monkeypatch.setattr(sgd_module, "get_rank", lambda: 3)
    settings = LossSettings(sgd=SGDSettings(k_init=16, mode="none"), seed=10, gather=False)
    criterion_loss = SGDLoss(settings)
    loss = criterion_loss(_outputs(features, cls, valid), 0)
    generator = criterion_loss._generators[torch.device("cpu")]
    assert list(criterion_loss._generators) == [torch.device("cpu")]
    assert generator.initial_seed() == 13  # seed + rank: every process draws other noise
    direct = criterion_loss.sgd(
        features, cls, 0, valid=valid, generator=torch.Generator().manual_seed(13), gather=False
    )
    torch.testing.assert_close(loss, direct)
    unmasked = criterion_loss.sgd(
        features, cls, 0, generator=torch.Generator().manual_seed(13), gather=False
    )
    assert (loss - unmasked).abs() > 1e-3


@pytest.mark.cuda
def test_sgd_loss_draws_its_seeded_noise_on_the_features_gpu() -> None:
    """On CUDA features the generator is a CUDA one, seeded like the CPU path (a CPU generator
    would draw the noise on the host and copy it over every step: other numbers, more work)."""
    features, cls = _inputs(2, 8, 4, 4)
    features, cls = features.cuda(), cls.cuda()
    valid = torch.ones(2, 4, 4, dtype=torch.bool, device="cuda")
    settings = LossSettings(sgd=SGDSettings(k_init=16, mode="none"), seed=10, gather=False)
    criterion_loss = SGDLoss(settings)
    loss = criterion_loss(_outputs(features, cls, valid), 0)
    generator = criterion_loss._generators[features.device]
    assert generator.device.type == "cuda" and generator.initial_seed() == 10
    direct = criterion_loss.sgd(
        features,
        cls,
        0,
        valid=valid,
        generator=torch.Generator(device="cuda").manual_seed(10),
        gather=False,
    )
    torch.testing.assert_close(loss, direct)
