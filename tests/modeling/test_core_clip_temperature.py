"""SAM's text temperature tau_c defaults to the CLIP's own learnt temperature; a number wins."""

from __future__ import annotations

import math

import pytest
import torch
from chimeraseg_test_utils import build_tiny_clip, build_tiny_model
from torch import nn

from chimeraseg.clip.teacher import clip_temperature
from chimeraseg.modeling import LossSettings, SAMSettings


def _clip_with_scale(scale: float) -> nn.Module:
    clip = build_tiny_clip()  # its own copy: the shared fixture must not change
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(scale))
    return clip


def test_clip_temperature_is_one_over_the_exp_logit_scale() -> None:
    assert clip_temperature(_clip_with_scale(100.0)) == pytest.approx(0.01, rel=1e-6)  # OpenAI
    assert clip_temperature(_clip_with_scale(16.9)) == pytest.approx(1 / 16.9, rel=1e-6)
    with pytest.raises(TypeError, match="TAU_C"):
        clip_temperature(nn.Linear(2, 2))


def test_builder_takes_tau_c_from_the_clip_unless_set() -> None:
    clip = _clip_with_scale(20.0)
    model = build_tiny_model(clip)
    assert model.criterion.losses["loss_sam"].settings.tau_c == pytest.approx(0.05, rel=1e-6)
    assert model.settings.losses.sam.tau_c == pytest.approx(0.05, rel=1e-6)
    explicit = LossSettings(sam=SAMSettings(tau_c=0.01))
    model = build_tiny_model(clip, losses=explicit)
    assert model.criterion.losses["loss_sam"].settings.tau_c == 0.01
