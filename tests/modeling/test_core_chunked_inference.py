"""Inference speed paths of the core: exact CSH chunking, per-image upsampling, stride-8 option."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from chimeraseg_test_utils import build_tiny_model
from torch import nn

from chimeraseg.modeling import ChimeraSegModel, CLIPSemanticHead, HeadSettings, InferenceConfig
from chimeraseg.modeling.inference import upsample_logits


def _randomise_bn(head: CLIPSemanticHead) -> None:
    """Non-trivial BN statistics and affine, so a chunking error in BN would show."""
    with torch.no_grad():
        head.norm.bn.running_mean.normal_()
        head.norm.bn.running_var.uniform_(0.5, 2.0)
        head.norm.bn.weight.normal_()
        head.norm.bn.bias.normal_()


def _model(clip: nn.Module, **kwargs) -> ChimeraSegModel:
    model = build_tiny_model(clip, with_teacher=False, **kwargs)
    _randomise_bn(model.head)
    return model.eval()


def _count_mlp_calls(head: CLIPSemanticHead) -> list[int]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    head.mlp.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("norm", ["BN", "LN_clip", "LN", "none"])
def test_chunked_head_equals_one_pass(tiny_clip: nn.Module, norm: str) -> None:
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(norm=norm)).eval()
    if norm == "BN":
        _randomise_bn(head)
    calls = _count_mlp_calls(head)
    x = torch.randn(2, 16, 5, 6)  # 60 positions: 8 chunks of 7 and one of 4
    with torch.no_grad():
        whole = head(x, chunk_tokens=0)
        assert calls[0] == 1
        chunked = head(x, chunk_tokens=7)
        assert calls[0] == 1 + 9  # really chunked
        fres = head.map_residual_rows(x, None, chunk_tokens=7)
    assert chunked.shape == whole.shape == (2, 32, 5, 6)
    assert (chunked - whole).abs().max() <= 1e-5
    assert fres.shape == (2, 5, 6, 64) and fres.is_contiguous()
    torch.testing.assert_close(head.proj(fres).permute(0, 3, 1, 2), whole, rtol=0, atol=1e-5)


def test_no_chunking_with_gradients_bn_training_or_gn(tiny_clip: nn.Module) -> None:
    x = torch.randn(2, 16, 5, 6)
    head = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings())
    calls = _count_mlp_calls(head)
    head.eval()
    head(x, chunk_tokens=7)  # gradients enabled: one pass
    assert calls[0] == 1
    head.train()
    with torch.no_grad():  # BN in training mode: statistics over all positions, one pass
        before = head.norm.bn.num_batches_tracked.clone()
        head(x, chunk_tokens=7)
    assert calls[0] == 2 and int(head.norm.bn.num_batches_tracked - before) == 1
    gn = CLIPSemanticHead(16, tiny_clip.visual, HeadSettings(norm="GN")).eval()
    gn_calls = _count_mlp_calls(gn)
    with torch.no_grad():
        assert not gn.chunking_allowed()
        gn(x, chunk_tokens=7)
    assert gn_calls[0] == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_inference_options_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"chunk_tokens=.* must be an int >= 0"):
        InferenceConfig(chunk_tokens=bad)
    with pytest.raises(ValueError, match=r"head_downsample=.* must be an int >= 1"):
        InferenceConfig(head_downsample=bad)
    with pytest.raises(ValueError, match="mode='tiles'"):
        InferenceConfig(mode="tiles")


def test_forward_test_chunked_equals_unchunked(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip)
    images, vocab = torch.rand(2, 3, 64, 72) * 255, torch.randn(6, 32)  # 2 x 16 x 18 positions
    calls = _count_mlp_calls(model.head)
    with torch.inference_mode():
        whole = model.forward_test(images, vocab, InferenceConfig(chunk_tokens=0))
        chunked = model.forward_test(images, vocab, InferenceConfig(chunk_tokens=37))
        window = InferenceConfig(mode="slide", slide_crop=(64, 64), slide_stride=(32, 32))
        slide0 = model.forward_test(images, vocab, replace(window, chunk_tokens=0))
        slide = model.forward_test(images, vocab, window)
    assert calls[0] == 1 + 16 + 2 + 2  # 576 / 37 -> 16 chunks; default 1024 -> one per window
    assert chunked.shape == (2, 6, 64, 72)
    assert (chunked - whole).abs().max() <= 1e-5
    assert torch.equal(chunked.argmax(1), whole.argmax(1))
    assert (slide - slide0).abs().max() <= 1e-5


def _stride8_reference(model: ChimeraSegModel, images: torch.Tensor, vocab: torch.Tensor):
    """Pooling by hand: 2x2 average (ceil) of the decoder output, CSH, cosine, upsample once."""
    features = model.decoder(model.backbone((images - model.pixel_mean) / model.pixel_std))
    h, w = features.shape[-2:]
    pooled = torch.zeros(features.shape[0], features.shape[1], (h + 1) // 2, (w + 1) // 2)
    for i in range(pooled.shape[-2]):
        for j in range(pooled.shape[-1]):
            pooled[..., i, j] = features[..., 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean((-2, -1))
    fc = model.head(pooled, chunk_tokens=0)  # (B, D, h/2, w/2)
    cos = torch.einsum("bdhw,nd->bnhw", F.normalize(fc, dim=1), F.normalize(vocab, dim=-1))
    return F.interpolate(cos / model.logit_tau, size=images.shape[-2:], mode="bilinear")


def test_head_downsample_option(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip)
    images, vocab = torch.rand(2, 3, 64, 76) * 255, torch.randn(6, 32)  # features 16 x 19 (odd)
    with torch.inference_mode():
        exact = model.forward_test(images, vocab)
        same = model.forward_test(images, vocab, InferenceConfig(head_downsample=1))
        fast = model.forward_test(
            images, vocab, InferenceConfig(head_downsample=2, chunk_tokens=11)
        )
        model.inference = InferenceConfig(head_downsample=2)
        default_fast = model.forward_test(images, vocab)
        reference = _stride8_reference(model, images, vocab)
    assert torch.equal(exact, same)
    assert fast.shape == exact.shape == (2, 6, 64, 76)
    assert (fast - reference).abs().max() <= 1e-5
    assert (fast - exact).abs().max() > 1e-3  # inexact: it really changes the logits
    torch.testing.assert_close(default_fast, fast, rtol=0, atol=1e-5)


def test_training_never_pools_or_chunks(tiny_clip: nn.Module) -> None:
    model = _model(tiny_clip, inference=InferenceConfig(head_downsample=2, chunk_tokens=7))
    calls = _count_mlp_calls(model.head)
    images = torch.rand(1, 3, 64, 64) * 255
    assert model.clip_features(images).shape == (1, 32, 16, 16)  # gradients on: no chunks
    assert calls[0] == 1


def test_per_image_upsampling_equals_batched() -> None:
    logits = torch.randn(3, 5, 7, 9).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    ref = F.interpolate(logits, size=(30, 37), mode="bilinear", align_corners=False)
    with torch.no_grad():
        out = upsample_logits(logits, (30, 37))
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    grad_in = logits.clone().requires_grad_(True)
    upsample_logits(grad_in, (30, 37)).sum().backward()  # the autograd path still works
    assert grad_in.grad is not None


@pytest.mark.parametrize("batch", [1, 2])
def test_forward_test_logits_are_class_major(tiny_clip: nn.Module, batch: int) -> None:
    # A channels-last output made every class-map reader (the evaluator) gather with stride N.
    model = _model(tiny_clip).eval()
    text = torch.randn(5, model.head.embed_dim)
    with torch.inference_mode():
        out = model.forward_test(torch.rand(batch, 3, 64, 64) * 255, text)
    assert out.shape == (batch, 5, 64, 64)
    assert out.is_contiguous()


def test_upsampling_of_a_degenerate_stride_view_is_contiguous() -> None:
    # (1, h*w, N) -> transpose -> reshape: a batch-1 view whose batch stride is N, which the
    # fast bilinear kernel does not take for channels-last.
    rows = torch.randn(1, 7 * 9, 5)
    view = rows.transpose(1, 2).reshape(1, 5, 7, 9)
    with torch.no_grad():
        out = upsample_logits(view, (30, 37))
    assert out.is_contiguous()
    ref = F.interpolate(view.contiguous(), size=(30, 37), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_model_built_inside_inference_mode(tiny_clip: nn.Module) -> None:
    """ValueBlock's fused-value cache key must not read the version of inference tensors."""
    images, vocab = torch.rand(1, 3, 64, 64) * 255, torch.randn(6, 32)
    with torch.inference_mode():
        model = _model(tiny_clip)
        assert model.head.vencoder.blocks[0].v_proj.weight.is_inference()
        first = model.forward_test(images, vocab)
        second = model.forward_test(images, vocab)  # cache hit with the same key
    reference = _model(tiny_clip)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = reference.forward_test(images, vocab)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-5)


def test_compiled_features_equal_eager_and_compile_once(tiny_clip: nn.Module) -> None:
    """``InferenceConfig(compile=True)`` (``TEST.COMPILE``): the same logits as eager through
    ``torch.compile``'s default backend, compiled once and kept on the model."""
    model = _model(tiny_clip)
    images, vocab = torch.rand(1, 3, 64, 64) * 255, torch.randn(6, 32)
    with torch.inference_mode():
        eager = model.forward_test(images, vocab, InferenceConfig())
        assert "_compiled_features" not in model.__dict__  # the eager path never compiles
        compiled = model.forward_test(images, vocab, InferenceConfig(compile=True))
        first = model.__dict__["_compiled_features"]
        again = model.forward_test(images, vocab, InferenceConfig(compile=True))
    assert model.__dict__["_compiled_features"] is first
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)
    assert torch.equal(again, compiled)
