"""Lseg, the criterion and the prototypes: devices, dtypes, edge cases and error messages.

References are plain PyTorch written from the docstrings; ``with torch.device("meta")`` makes
every factory call that does not name a device land on the meta device, so a value that still
matches the CPU reference shows the code places its helper tensors next to its inputs.
"""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from chimeraseg_test_utils import reference_lseg

from chimeraseg.modeling.losses import segmentation_loss, semantic_alignment_loss
from chimeraseg.modeling.losses.criterion import ChimeraSegCriterion, TrainingOutputs
from chimeraseg.modeling.prototypes import ImagePrototypes, class_prototypes, downsample_labels
from chimeraseg.modeling.settings import LossSettings, SegLossSettings

TAU, GAMMA = 0.1, 2.0


def _ce_focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CE plus mean focal (gamma 2, weights 1) over the valid pixels, via F.cross_entropy."""
    ce = F.cross_entropy(logits.double(), target, ignore_index=255, reduction="none")
    ce = ce[target != 255]
    return ce.mean() + ((1.0 - torch.exp(-ce)) ** GAMMA * ce).mean()


def _criterion(**weights: float) -> ChimeraSegCriterion:
    full = {"loss_seg": 0.0, "loss_sgd": 0.0, "loss_sam": 0.0, **weights}
    return ChimeraSegCriterion(LossSettings(weights=full, seg=SegLossSettings(), gather=False))


def _outputs(dim: int, latent_counts: list[int], dtype: torch.dtype) -> TrainingOutputs:
    """Two fixed text rows (labels 0, 1), latent labels 2.. with a prototype each, 255 pixels."""
    gen = torch.Generator().manual_seed(4)
    b, side = len(latent_counts), 3
    features = torch.randn(b, dim, side, side, generator=gen).to(dtype)
    labels = torch.randint(0, 2, (b, side, side), generator=gen)
    protos = []
    for i, n in enumerate(latent_counts):
        labels[i].view(-1)[:n] = torch.arange(2, 2 + n)
        labels[i, -1, -1] = 255
        latent = torch.randn(n, dim, generator=gen).to(dtype)
        protos.append(
            ImagePrototypes(
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, dim),
                torch.arange(2, 2 + n),
                latent,
            )
        )
    return TrainingOutputs(
        features=features,
        cls=F.normalize(torch.randn(b, dim, generator=gen), dim=-1),
        pseudo_labels=labels,
        prototypes=protos,
        classifier_text=F.normalize(torch.randn(2, dim, generator=gen), dim=-1),
        seen_text=torch.zeros(2, dim),
        logit_tau=TAU,
    )


def _reference_lseg(outputs: TrainingOutputs) -> torch.Tensor:
    """Float64 ``Lseg`` of :func:`_outputs` (latent label ``2 + j`` is column ``2 + j``)."""
    latent = [p.latent for p in outputs.prototypes]
    columns = [{2 + j: 2 + j for j in range(len(lat))} for lat in latent]
    return reference_lseg(outputs, latent, columns, (1.0, 1.0, GAMMA))


# ------------------------------------------------------------------------ segmentation_loss
def test_same_size_logits_are_used_unresampled_so_minus_inf_classes_stay_exact() -> None:
    """At label resolution no interpolation runs: a -inf logit of an absent class gives no NaN."""
    logits = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    logits[:, 2] = -math.inf
    target = torch.tensor([[[0, 1], [1, 255]]])
    got = segmentation_loss(logits, target, ce_weight=1.0, focal_weight=1.0, focal_gamma=GAMMA)
    torch.testing.assert_close(got.double(), _ce_focal(logits[:, :2], target))


def test_single_class_with_ignored_pixels_has_zero_loss() -> None:
    """With one class every valid pixel has p_t = 1; ignored pixels index no missing class."""
    target = torch.tensor([[[0, 255], [255, 0]]])
    got = segmentation_loss(
        torch.randn(1, 1, 2, 2), target, ce_weight=1.0, focal_weight=1.0, focal_gamma=GAMMA
    )
    assert got.item() == 0.0


@pytest.mark.parametrize(("ce", "focal"), [(1.0, 1.0), (0.0, 0.0)])
def test_segmentation_loss_is_float32_for_float64_logits(ce: float, focal: float) -> None:
    """The loss is float32 whatever the logits' dtype, also when both terms are off."""
    logits = torch.randn(
        1, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    target = torch.tensor([[[0, 1], [2, 0]]])
    got = segmentation_loss(logits, target, ce_weight=ce, focal_weight=focal, focal_gamma=GAMMA)
    assert got.dtype == torch.float32
    expected = _ce_focal(logits, target).item() if ce else 0.0
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_losses_emit_no_warnings() -> None:
    """Lseg and Lsam name their softmax dimensions: no deprecation warning is raised."""
    gen = torch.Generator().manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segmentation_loss(
            torch.randn(1, 3, 2, 2, generator=gen),
            torch.zeros(1, 4, 4, dtype=torch.long),
            ce_weight=1.0,
            focal_weight=1.0,
            focal_gamma=GAMMA,
        )
        semantic_alignment_loss(
            torch.randn(3, 4, generator=gen),
            torch.randn(3, 4, generator=gen),
            torch.randn(2, 4, generator=gen),
            tau_f=0.07,
            tau_c=0.01,
        )


# ---------------------------------------------------------------------------------- SegLoss
def test_seg_loss_matches_reference_with_float64_features_and_float32_text() -> None:
    """The float32 text rows are cast to the features' dtype; the value is the float64 reference."""
    outputs = _outputs(dim=6, latent_counts=[2, 1], dtype=torch.float64)
    got = _criterion(loss_seg=1.0).losses["loss_seg"](outputs, 0)
    torch.testing.assert_close(got.double(), _reference_lseg(outputs))


def test_seg_loss_with_more_latent_prototypes_than_feature_channels() -> None:
    """Classifier width is C0 plus the largest latent count, even when that exceeds D."""
    outputs = _outputs(dim=2, latent_counts=[4, 3], dtype=torch.float32)
    got = _criterion(loss_seg=1.0).losses["loss_seg"](outputs, 0)
    torch.testing.assert_close(got.double(), _reference_lseg(outputs), rtol=1e-5, atol=1e-5)


def test_seg_loss_builds_its_tables_on_the_features_device() -> None:
    """Under a meta default device the loss still computes on CPU and equals the reference."""
    outputs = _outputs(dim=6, latent_counts=[2, 1], dtype=torch.float32)
    loss = _criterion(loss_seg=1.0).losses["loss_seg"]
    with torch.device("meta"):
        got = loss(outputs, 0)
    assert got.device.type == "cpu"
    torch.testing.assert_close(got.double(), _reference_lseg(outputs), rtol=1e-5, atol=1e-5)


def test_seg_loss_rejects_labels_past_255() -> None:
    """Pseudo labels live in [0, 256); a label 256 is an indexing error, not silently ignored."""
    outputs = _outputs(dim=6, latent_counts=[2, 1], dtype=torch.float32)
    outputs.pseudo_labels[0, 0, 0] = 256
    with pytest.raises(
        RuntimeError, match="index 256 is out of bounds for dimension 1 with size 256"
    ):
        _criterion(loss_seg=1.0).losses["loss_seg"](outputs, 0)


# -------------------------------------------------------------------------------- criterion
def test_criterion_keeps_its_settings_and_reports_skipped_losses_as_float32_zero() -> None:
    """Zero-weight losses are an exact float32 0 even for bfloat16 features."""
    settings = LossSettings(weights={"loss_seg": 0.0, "loss_sgd": 0.0, "loss_sam": 0.0})
    criterion = ChimeraSegCriterion(settings)
    assert criterion.settings is settings
    outputs = _outputs(dim=6, latent_counts=[1], dtype=torch.bfloat16)
    losses = criterion(outputs, 0)
    assert list(losses) == ["loss_seg", "loss_sgd", "loss_sam"]
    for value in losses.values():
        assert value.dtype == torch.float32 and value.item() == 0.0


# ------------------------------------------------------------------------------- prototypes
def test_class_prototypes_rejects_labels_at_another_resolution() -> None:
    """The message names both shapes."""
    message = (
        "class_prototypes: features (2, 3, 4, 4) must be (B, D, h, w) and labels (2, 4, 5) must "
        "be (B, h, w) at the same resolution"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        class_prototypes(
            torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long), num_seen=2
        )


def test_class_prototypes_latent_start_defaults_to_num_seen() -> None:
    """Without latent_start every label >= num_seen is latent: hand-computed means."""
    features = torch.tensor([[1.0, 2.0, 4.0, 8.0], [0.0, -1.0, 3.0, 5.0]]).view(1, 2, 1, 4)
    labels = torch.tensor([[[3, 0, 3, 255]]])
    (proto,) = class_prototypes(features, labels, num_seen=2)
    assert proto.seen_ids.tolist() == [0] and proto.seen.tolist() == [[2.0, -1.0]]
    assert proto.latent_ids.tolist() == [3] and proto.latent.tolist() == [[2.5, 1.5]]


def test_bfloat16_prototype_of_a_constant_feature_is_that_constant() -> None:
    """257 pixels of value 1 in bfloat16: the pixel count is rounded like the sum, mean stays 1."""
    features = torch.ones(1, 2, 1, 257, dtype=torch.bfloat16)
    (proto,) = class_prototypes(features, torch.zeros(1, 1, 257, dtype=torch.long), num_seen=2)
    assert proto.seen.dtype == torch.bfloat16 and proto.seen.tolist() == [[1.0, 1.0]]


def test_downsample_labels_returns_the_input_at_its_own_size() -> None:
    """No copy and no dtype change when the label map already has the requested size."""
    labels = torch.randint(0, 5, (2, 3, 4), dtype=torch.int32)
    assert downsample_labels(labels, (3, 4)) is labels
    assert downsample_labels(labels, (3, 2)).tolist() == labels[:, :, ::2].long().tolist()
