"""Lseg on the per-image classifier and SGD's Gumbel selection, value for value.

Each reference is written here from the method's definition (docs/METHOD.md) with plain
PyTorch calls, never by calling the implementation's helpers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from chimeraseg_test_utils import reference_lseg

from chimeraseg.modeling.losses import SelectiveGlobalDistillation
from chimeraseg.modeling.losses.criterion import ChimeraSegCriterion, TrainingOutputs
from chimeraseg.modeling.prototypes import ImagePrototypes
from chimeraseg.modeling.settings import LossSettings, SegLossSettings, SGDSettings

TAU = 0.05
CE_WEIGHT, FOCAL_WEIGHT, FOCAL_GAMMA = 1.0, 0.5, 2.0
NUM_FIXED, DIM, SIDE = 3, 8, 4


def _lseg_criterion(seg_weight: float) -> ChimeraSegCriterion:
    seg = SegLossSettings(ce_weight=CE_WEIGHT, focal_weight=FOCAL_WEIGHT, focal_gamma=FOCAL_GAMMA)
    weights = {"loss_seg": seg_weight, "loss_sgd": 0.0, "loss_sam": 0.0}
    return ChimeraSegCriterion(LossSettings(weights=weights, seg=seg, gather=False))


def _lseg(criterion: ChimeraSegCriterion, outputs: TrainingOutputs) -> torch.Tensor:
    """The unweighted ``Lseg`` of the criterion's registered segmentation loss."""
    return criterion.losses["loss_seg"](outputs, 0)


def _lseg_batch() -> tuple[TrainingOutputs, list[torch.Tensor], list[dict[int, int]]]:
    """Two images; labels 0-2 fixed text, 3+ latent. Image 0 has latent prototypes 3 and 4 (norms
    0.5 and 3.0) and a latent label 5 without prototype; image 1 has only latent prototype 3, so
    its classifier has one padding column, and a latent label 4 without prototype."""
    features = torch.randn(2, DIM, SIDE, SIDE)
    labels = torch.randint(0, NUM_FIXED, (2, SIDE, SIDE))
    labels[0, 0] = 3
    labels[0, 1, :2] = 4
    labels[0, 1, 2:] = 5  # no prototype: ignored
    labels[0, 3, 3] = 255
    labels[1, 0, :3] = 3
    labels[1, 2] = 4  # no prototype in image 1: ignored
    labels[1, 3, :2] = 255
    direction = F.normalize(torch.randn(3, DIM), dim=-1)
    latent = [torch.stack([0.5 * direction[0], 3.0 * direction[1]]), 2.0 * direction[2:]]
    prototypes = [
        ImagePrototypes(
            seen_ids=torch.zeros(0, dtype=torch.long),
            seen=torch.zeros(0, DIM),
            latent_ids=torch.arange(3, 3 + len(lat)),
            latent=lat,
        )
        for lat in latent
    ]
    fixed = F.normalize(torch.randn(NUM_FIXED, DIM), dim=-1)
    outputs = TrainingOutputs(
        features=features,
        cls=F.normalize(torch.randn(2, DIM), dim=-1),
        pseudo_labels=labels,
        prototypes=prototypes,
        classifier_text=fixed,
        seen_text=fixed,
        logit_tau=TAU,
    )
    columns = [{3: 3, 4: 4}, {3: 3}]  # latent label -> classifier column, per image
    return outputs, latent, columns


def _reference_lseg(outputs: TrainingOutputs, latent, columns, **mistakes) -> torch.Tensor:
    """The float64 reference of ``Lseg`` at this file's weights, as float32 (the loss's dtype)."""
    weights = (CE_WEIGHT, FOCAL_WEIGHT, FOCAL_GAMMA)
    return reference_lseg(outputs, latent, columns, weights, **mistakes).float()


def test_lseg_is_cross_entropy_plus_focal_on_the_per_image_classifier() -> None:
    outputs, latent, columns = _lseg_batch()
    expected = _reference_lseg(outputs, latent, columns)
    criterion = _lseg_criterion(seg_weight=2.0)
    torch.testing.assert_close(_lseg(criterion, outputs), expected)
    losses = criterion(outputs, iteration=0)
    torch.testing.assert_close(losses["loss_seg"], 2.0 * expected)
    # The three details the reference pins each change the value (so the test can fail):
    merged = [{3: 3, 4: 4, 5: 4}, {3: 3, 4: 3}]  # labels without prototype given a column
    for wrong in (
        _reference_lseg(outputs, latent, merged),
        _reference_lseg(outputs, latent, columns, normalise=False),
        _reference_lseg(outputs, latent, columns, pad_to=NUM_FIXED + 2),
    ):
        assert (wrong - expected).abs() > 1e-3 * expected


def test_lseg_ignores_latent_labels_without_prototype_and_padding_columns() -> None:
    outputs, latent, columns = _lseg_batch()
    criterion = _lseg_criterion(seg_weight=1.0)
    before = _lseg(criterion, outputs)
    # Pixels of a latent label without prototype carry no loss: relabelling them 255 is a no-op.
    labels = outputs.pseudo_labels.clone()
    labels[0][labels[0] == 5] = 255
    labels[1][labels[1] == 4] = 255
    outputs.pseudo_labels = labels
    torch.testing.assert_close(_lseg(criterion, outputs), before, rtol=0, atol=0)
    # Image 1 alone (no padding column in a batch of one) has the loss of its own classifier.
    single = TrainingOutputs(
        features=outputs.features[1:],
        cls=outputs.cls[1:],
        pseudo_labels=labels[1:],
        prototypes=outputs.prototypes[1:],
        classifier_text=outputs.classifier_text,
        seen_text=outputs.seen_text,
        logit_tau=TAU,
    )
    torch.testing.assert_close(
        _lseg(criterion, single), _reference_lseg(single, latent[1:], columns[1:])
    )


# ------------------------------------------------------------------------------------- SGD
def _reference_pooled(
    features: torch.Tensor, cls: torch.Tensor, k: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Fg`` of the top-K of ``S + Gumbel`` (the noise drawn from a generator seeded ``seed``)."""
    b, d = features.shape[:2]
    tokens = features.flatten(2).transpose(1, 2)  # (B, h·w, D)
    scores = (tokens * cls[:, None]).sum(-1) / math.sqrt(d)  # (B, h·w) = S
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(scores.shape, generator=generator)
    uniform = uniform.clamp(torch.finfo(uniform.dtype).tiny, 1.0 - torch.finfo(uniform.dtype).eps)
    gumbel = -torch.log(-torch.log(uniform))
    top = (scores + gumbel).topk(k, dim=1).indices  # (B, K); softmax/τ keeps the order
    pooled = []
    for i in range(b):
        chosen = tokens[i, top[i]]  # (K, D) = Fk
        weights = torch.softmax(chosen @ cls[i] / math.sqrt(d), dim=0)  # (K,) = W'
        pooled.append(weights @ chosen)
    return torch.stack(pooled), top


def test_sgd_selects_topk_of_scores_plus_gumbel_noise_of_its_generator() -> None:
    features = torch.randn(3, DIM, 5, 5)
    cls = F.normalize(torch.randn(3, DIM), dim=-1)
    k = 6
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=k, k_step=0.0, mode="none", tau=0.07))
    got = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(11))
    expected, top = _reference_pooled(features, cls, k, seed=11)
    torch.testing.assert_close(got, expected)
    tokens = features.flatten(2).transpose(1, 2)
    noiseless = (tokens * cls[:, None]).sum(-1).topk(k, dim=1).indices
    assert any(set(a.tolist()) != set(b.tolist()) for a, b in zip(top, noiseless))  # can fail


def test_sgd_different_seeds_select_different_positions() -> None:
    features = torch.randn(2, DIM, 6, 6)
    cls = F.normalize(torch.randn(2, DIM), dim=-1)
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=4, k_step=0.0, mode="none", tau=0.07))
    pooled = [
        sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(s)) for s in (0, 1)
    ]
    again = sgd.pooled_features(features, cls, 0, torch.Generator().manual_seed(0))
    assert torch.equal(pooled[0], again)
    assert (pooled[0] - pooled[1]).abs().amax(dim=1).min() > 1e-3  # every image differs


@pytest.mark.parametrize("seed", [0, 5])
def test_sgd_loss_is_infonce_of_the_reference_pooled_features(seed: int) -> None:
    features, cls = torch.randn(3, DIM, 4, 4), F.normalize(torch.randn(3, DIM), dim=-1)
    sgd = SelectiveGlobalDistillation(SGDSettings(k_init=5, k_step=0.0, mode="none", tau=0.1))
    got = sgd(features, cls, 0, generator=torch.Generator().manual_seed(seed), gather=False)
    pooled, _ = _reference_pooled(features, cls, 5, seed)
    logits = F.normalize(pooled, dim=-1) @ cls.t() / 0.1  # (B, B)
    torch.testing.assert_close(got, F.cross_entropy(logits, torch.arange(3)))
