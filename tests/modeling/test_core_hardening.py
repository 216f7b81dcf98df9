"""The loss settings refuse weights < 0 and temperatures <= 0 (no NaN at iteration 0)."""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import build_tiny_model

from chimeraseg.modeling import (
    ChimeraSegCriterion,
    LossSettings,
    SAMSettings,
    SegLossSettings,
)


@pytest.mark.parametrize(
    ("make", "argument", "value", "rule"),
    [
        (SAMSettings, "tau_f", -0.07, "> 0"),
        (SAMSettings, "tau_c", float("nan"), "> 0"),
        (SegLossSettings, "ce_weight", -1.0, ">= 0"),
        (SegLossSettings, "focal_weight", float("inf"), ">= 0"),
        (SegLossSettings, "focal_gamma", -2.0, ">= 0"),
    ],
)
def test_out_of_range_loss_arguments_are_refused(make, argument, value, rule) -> None:
    with pytest.raises(ValueError, match=rf"{argument}={value!r} must be finite and {rule}"):
        make(**{argument: value})


@pytest.mark.parametrize(("name", "value"), [("loss_sgd", -1.0), ("loss_sam", -0.5)])
def test_negative_loss_weights_are_refused(name, value) -> None:
    with pytest.raises(ValueError, match=rf"{name}={value!r} must be finite and >= 0"):
        LossSettings().with_weights(**{name: value})


def test_unregistered_loss_is_refused_naming_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"'loss_x' is not registered .*'loss_seg'"):
        ChimeraSegCriterion(LossSettings().with_weights(loss_x=1.0))


def test_zero_logit_temperature_is_refused(tiny_clip) -> None:
    with pytest.raises(ValueError, match=r"logit_tau=0.0 must be finite and > 0"):
        build_tiny_model(tiny_clip, with_teacher=False, logit_tau=0.0)


def test_zero_weights_are_allowed_and_not_built() -> None:
    settings = LossSettings(seg=SegLossSettings(focal_weight=0.0))
    criterion = ChimeraSegCriterion(settings.with_weights(loss_sgd=0.0, loss_sam=0.0))
    assert criterion.weight_dict == {"loss_seg": 1.0, "loss_sgd": 0.0, "loss_sam": 0.0}
    assert list(criterion.losses) == ["loss_seg"]
