"""ChimeraSegModel refuses loss weights < 0 and temperatures <= 0 (no NaN at iteration 0)."""

from __future__ import annotations

import pytest
import torch
from chimeraseg_test_utils import TinyBackbone, TinyDecoder
from torch import nn

from chimeraseg.modeling import ChimeraSegModel, CLIPSemanticHead

SEEN, UNSEEN = [0, 1, 2, 4], [3, 5]


def _model(clip: nn.Module, **kwargs) -> ChimeraSegModel:
    text = torch.randn(6, 32)
    return ChimeraSegModel(
        backbone=TinyBackbone(),
        decoder=TinyDecoder(),
        head=CLIPSemanticHead(16, clip.visual),
        teacher=None,
        seen_text=text[SEEN],
        unseen_text=text[UNSEEN],
        seen_ids=SEEN,
        unseen_ids=UNSEEN,
        num_classes=6,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("argument", "value", "rule"),
    [
        ("tau", 0.0, "> 0"),
        ("tau_f", -0.07, "> 0"),
        ("tau_c", float("nan"), "> 0"),
        ("sgd_weight", -1.0, ">= 0"),
        ("lambda_sam", -0.5, ">= 0"),
        ("ce_weight", -1.0, ">= 0"),
        ("focal_weight", float("inf"), ">= 0"),
        ("focal_gamma", -2.0, ">= 0"),
    ],
)
def test_out_of_range_loss_arguments_are_refused(tiny_clip, argument, value, rule) -> None:
    with pytest.raises(ValueError, match=rf"{argument}={value!r} must be finite and {rule}"):
        _model(tiny_clip, **{argument: value})


def test_zero_weights_are_allowed(tiny_clip) -> None:
    model = _model(tiny_clip, sgd_weight=0.0, lambda_sam=0.0, focal_weight=0.0)
    assert model.lambda_sam == 0.0
