"""ViT-B/16 student: timm-format weights, position-embedding resizing, pyramid output sizes."""

from __future__ import annotations

import math

import pytest
import torch

from chimeraseg.modeling.backbone import CheckpointError, build_vit_b16, load_vit_checkpoint
from chimeraseg.modeling.backbone.layers import resize_pos_embed


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    return build_vit_b16().eval()


def test_architecture_is_vit_b16(vit):
    assert len(vit.vit.blocks) == 12 and vit.vit.embed_dim == 768
    assert vit.vit.patch_embed.proj.kernel_size == (16, 16)
    assert vit.vit.pos_embed.shape == (1, 1 + 14 * 14, 768)
    assert vit.out_channels == {"res2": 192, "res3": 384, "res4": 768, "res5": 768}
    assert vit.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


@pytest.mark.parametrize("size", [(224, 224), (200, 249)])
def test_output_sizes_are_ceil_of_stride(vit, size):
    with torch.no_grad():
        out = vit(torch.randn(1, 3, *size))
    for name, stride in vit.out_strides.items():
        hw = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert out[name].shape == (1, vit.out_channels[name], *hw), name


def test_resize_pos_embed_keeps_class_entry_and_constants():
    pos = torch.randn(1, 1 + 4 * 4, 6)
    assert resize_pos_embed(pos, (4, 4)) is pos
    constant = torch.cat([torch.randn(1, 1, 6), torch.full((1, 16, 6), 0.7)], dim=1)
    resized = resize_pos_embed(constant, (5, 7))
    assert resized.shape == (1, 1 + 35, 6)
    assert torch.equal(resized[:, :1], constant[:, :1])
    torch.testing.assert_close(resized[:, 1:], torch.full((1, 35, 6), 0.7))
    with pytest.raises(ValueError, match="not a square grid"):
        resize_pos_embed(torch.randn(1, 1 + 12, 6), (3, 3))


def test_timm_state_dict_loads_strictly_and_matches_timm_features(tmp_path, vit):
    timm = pytest.importorskip("timm", reason="timm provides the reference ViT-B/16")
    reference = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    path = tmp_path / "vit_base_patch16_224.pth"
    torch.save(reference.state_dict(), path)
    assert load_vit_checkpoint(vit, path) == ["head.weight", "head.bias"]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_features(x)[:, 1:]  # (1, 196, 768) after the final norm
        expected = expected.transpose(1, 2).reshape(1, 768, 14, 14)
        torch.testing.assert_close(vit.vit(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(vit(x)["res4"], expected, rtol=1e-4, atol=1e-4)


def _vit_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.vit.state_dict().items()}


def test_larger_grid_pos_embed_is_resized_on_load(tmp_path, vit):
    state = _vit_state(vit)
    state["pos_embed"] = torch.randn(1, 1 + 24 * 24, 768)  # a 384-pixel checkpoint
    path = tmp_path / "vit384.pth"
    torch.save({"model": state}, path)
    load_vit_checkpoint(vit, path)
    assert torch.equal(vit.vit.pos_embed[:, 0], state["pos_embed"][:, 0])
    assert vit.vit.pos_embed.shape == (1, 197, 768)


def test_missing_and_unexpected_vit_keys_are_named(tmp_path, vit):
    state = _vit_state(vit)
    del state["blocks.11.mlp.fc2.bias"]
    state["reg_token"] = torch.zeros(1, 4, 768)
    path = tmp_path / "bad_vit.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_vit_checkpoint(vit, path)
    message = str(info.value)
    assert "missing keys [blocks.11.mlp.fc2.bias]" in message
    assert "unexpected keys [reg_token]" in message and str(path) in message
