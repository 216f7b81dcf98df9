"""Frozen CLIP teacher: cls vs open_clip, dense value path, pos-embed interpolation, padding."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from chimeraseg_test_utils import build_tiny_clip

from chimeraseg.clip.teacher import CLIPTeacher, interpolate_pos_embed


def _normalised(teacher: CLIPTeacher, images: torch.Tensor) -> torch.Tensor:
    return (images - teacher.pixel_mean) / teacher.pixel_std


def _hand_dense(clip, teacher, images, dense_path="value_ffn"):
    """Penultimate tokens from open_clip's own modules, then the value path by hand: with the
    block's residual and FFN ("value_ffn") or alone as in MaskCLIP ("value")."""
    visual = clip.visual
    x = visual._embeds(_normalised(teacher, images))
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    block = visual.transformer.resblocks[-1]
    patches = x[:, 1:]
    width = patches.shape[-1]
    v = block.ln_1(patches) @ block.attn.in_proj_weight[2 * width :].T
    v = v + block.attn.in_proj_bias[2 * width :]
    if dense_path == "value":
        return visual.ln_post(block.attn.out_proj(v)) @ visual.proj  # (B, h*w, D)
    y = patches + block.attn.out_proj(v)
    y = y + block.mlp(block.ln_2(y))
    return visual.ln_post(y) @ visual.proj  # (B, h*w, D)


def test_cls_matches_encode_image_tiny(tiny_clip):
    teacher = CLIPTeacher(tiny_clip)
    images = torch.rand(2, 3, 64, 64) * 255
    out = teacher(images)
    expected = tiny_clip.encode_image(_normalised(teacher, images), normalize=True)
    torch.testing.assert_close(out.cls, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.cls.norm(dim=-1), torch.ones(2))


def test_dense_matches_hand_value_path(tiny_clip):
    teacher = CLIPTeacher(tiny_clip)
    images = torch.rand(2, 3, 64, 64) * 255
    dense = teacher(images).dense
    assert dense.shape == (2, 32, 4, 4)
    expected = _hand_dense(tiny_clip, teacher, images)  # (B, 16, D)
    got = dense.flatten(2).transpose(1, 2)  # (B, D, 4, 4) -> (B, 16, D), row-major patches
    with torch.no_grad():
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_dense_path_value_matches_hand_maskclip_path(tiny_clip):
    default = CLIPTeacher(tiny_clip)
    teacher = CLIPTeacher(tiny_clip, dense_path="value")
    assert default.dense_path == "value_ffn" and teacher.dense_path == "value"
    images = torch.rand(2, 3, 64, 64) * 255
    out, ref = teacher(images), default(images)
    assert out.dense.shape == (2, 32, 4, 4)
    expected = _hand_dense(tiny_clip, teacher, images, dense_path="value")  # (B, 16, D)
    with torch.no_grad():
        torch.testing.assert_close(out.dense.flatten(2).transpose(1, 2), expected)
    assert torch.equal(out.cls, ref.cls)  # the CLS embedding does not depend on the dense path
    assert not torch.allclose(out.dense, ref.dense, atol=1e-3)


def test_dense_path_value_ffn_is_the_default_bit_exactly(tiny_clip):
    images = torch.rand(1, 3, 64, 64) * 255
    explicit = CLIPTeacher(tiny_clip, dense_path="value_ffn")(images)
    default = CLIPTeacher(tiny_clip)(images)
    assert torch.equal(explicit.dense, default.dense) and torch.equal(explicit.cls, default.cls)


def test_dense_path_is_validated(tiny_clip):
    with pytest.raises(
        ValueError, match=r"dense_path='ffn' is not one of \('value_ffn', 'value'\)"
    ):
        CLIPTeacher(tiny_clip, dense_path="ffn")
    with pytest.raises(TypeError):
        CLIPTeacher(tiny_clip, "value")  # keyword-only


@pytest.mark.slow
def test_vit_b16_cls_224_and_dense_shapes(vit_b16_clip):
    teacher = CLIPTeacher(vit_b16_clip)
    images = torch.rand(1, 3, 224, 224) * 255
    out = teacher(images)
    expected = vit_b16_clip.encode_image(_normalised(teacher, images), normalize=True)
    torch.testing.assert_close(out.cls, expected, rtol=1e-4, atol=1e-5)
    assert out.dense.shape == (1, 512, 14, 14)
    assert teacher(torch.rand(1, 3, 512, 512) * 255).dense.shape == (1, 512, 32, 32)
    non_square = teacher(torch.rand(1, 3, 320, 480) * 255)
    assert non_square.dense.shape == (1, 512, 20, 30)
    assert non_square.cls.shape == (1, 512)


def test_pos_embed_native_grid_is_original_and_cached(tiny_clip):
    teacher = CLIPTeacher(tiny_clip)
    pos = tiny_clip.visual.positional_embedding
    assert teacher._pos_embed((4, 4)) is pos
    resized = teacher._pos_embed((6, 9))
    assert resized.shape == (1 + 54, 64)
    assert teacher._pos_embed((6, 9)) is resized  # cached per grid size
    assert torch.equal(resized[0], pos[0])  # class-token row untouched


def test_pos_embed_interpolation_is_bicubic():
    pos = torch.randn(1 + 4 * 4, 8)
    out = interpolate_pos_embed(pos, (4, 4), (8, 6))
    grid = pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(8, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[1:], expected.permute(0, 2, 3, 1).reshape(48, 8))


def test_non_multiple_of_16_is_padded_with_mean_colour(tiny_clip):
    teacher = CLIPTeacher(tiny_clip)
    images = torch.rand(1, 3, 50, 70) * 255
    out = teacher(images)
    assert out.dense.shape == (1, 32, 4, 5)  # ceil(50/16), ceil(70/16)
    padded = teacher.pixel_mean.expand(1, 3, 64, 80).clone()
    padded[..., :50, :70] = images
    ref = teacher(padded)
    torch.testing.assert_close(out.dense, ref.dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.cls, ref.cls, rtol=1e-5, atol=1e-5)


def test_sequence_first_layout_gives_same_result(tiny_clip):
    """Old open_clip ran blocks sequence-first (L, B, D); the teacher must follow the flag."""
    seq_first = copy.deepcopy(tiny_clip)
    seq_first.visual.transformer.batch_first = False
    for block in seq_first.visual.transformer.resblocks:
        block.attn.batch_first = False
    images = torch.rand(2, 3, 64, 80) * 255
    a, b = CLIPTeacher(tiny_clip)(images), CLIPTeacher(seq_first)(images)
    torch.testing.assert_close(a.cls, b.cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.dense, b.dense, rtol=1e-5, atol=1e-5)


def test_teacher_is_frozen_and_stays_eval(tiny_clip):
    teacher = CLIPTeacher(tiny_clip)
    teacher.train()
    assert not teacher.training and not teacher.visual.training
    assert not any(p.requires_grad for p in teacher.parameters())
    images = torch.rand(1, 3, 64, 64, requires_grad=True) * 255
    out = teacher(images)
    assert not out.cls.requires_grad and not out.dense.requires_grad


def test_teacher_rejects_bad_input(tiny_clip):
    teacher = CLIPTeacher(tiny_clip)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 64, 64\)"):
        teacher(torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="torch.uint8"):
        teacher(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_teacher_built_in_inference_mode_runs_and_matches():
    """Weights created under inference mode have no version counter; the caches must still work."""
    images = torch.rand(1, 3, 64, 96) * 255
    reference = CLIPTeacher(build_tiny_clip(seed=3))(images)
    with torch.inference_mode():
        clip = build_tiny_clip(seed=3)
        assert clip.visual.positional_embedding.is_inference()
        out = CLIPTeacher(clip)(images)
    assert torch.allclose(out.cls, reference.cls, atol=1e-6)
    assert torch.allclose(out.dense, reference.dense, atol=1e-5)
