"""Frozen CLIP-derived parameters stay out of training checkpoints and are restored from CLIP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chimeraseg.clip import (
    CLIPTeacher,
    build_vencoder,
    build_visual_projection,
    load_trainable_state_dict,
    trainable_state_dict,
)


class _Head(nn.Module):
    """A toy CLIP Semantic Head: trainable MLP + BN, frozen VEncoder/proj, frozen teacher."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.mlp = nn.Linear(8, 64)
        self.norm = nn.BatchNorm1d(64)
        self.vencoder = build_vencoder(clip.visual)
        self.proj = build_visual_projection(clip.visual)
        self.teacher = CLIPTeacher(clip)


def test_trainable_state_dict_drops_frozen_and_roundtrips(tiny_clip):
    head = _Head(tiny_clip)
    state = trainable_state_dict(head)
    assert not any(k.startswith(("vencoder.", "proj.", "teacher.")) for k in state)
    assert {"mlp.weight", "norm.weight", "norm.running_mean"} <= state.keys()
    fresh = _Head(tiny_clip)
    load_trainable_state_dict(fresh, state)
    assert torch.equal(fresh.mlp.weight, head.mlp.weight)


def test_missing_trainable_key_is_an_error(tiny_clip):
    state = trainable_state_dict(_Head(tiny_clip))
    state.pop("mlp.weight")
    state["bogus"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"ckpt.pth.*\['mlp.weight'\].*\['bogus'\]"):
        load_trainable_state_dict(_Head(tiny_clip), state, source="ckpt.pth")
