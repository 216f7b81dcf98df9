"""The benchmark's own pieces compute what they claim (baseline, stages, memory probe)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from benchmarks.baseline import MaskCLIPDense  # noqa: E402
from benchmarks.breakdown import stage_functions, stage_inputs  # noqa: E402
from benchmarks.clip_setup import Vocabulary  # noqa: E402
from benchmarks.measure import PeakMemory, measure  # noqa: E402
from benchmarks.student import StudentPipeline  # noqa: E402
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # noqa: E402

from chimeraseg.modeling import InferenceConfig  # noqa: E402


def _vocab(dim: int, n: int = 12) -> Vocabulary:
    text = F.normalize(torch.randn(n, dim), dim=-1)
    return Vocabulary(tuple(f"c{i}" for i in range(n)), tuple(range(9)), (9, 10, 11), text)


def test_baseline_tokens_reproduce_open_clip_image_embedding(tiny_clip) -> None:
    """Running CLIP's last block on the baseline's tokens gives open_clip's encode_image."""
    baseline = MaskCLIPDense(tiny_clip, _vocab(32).text)
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        tokens, grid = baseline.penultimate(images)
        last = tiny_clip.visual.transformer.resblocks[-1]
        seq_first = not getattr(tiny_clip.visual.transformer, "batch_first", False)
        out = last(tokens.transpose(0, 1)).transpose(0, 1) if seq_first else last(tokens)
        ours = tiny_clip.visual.ln_post(out[:, 0]) @ tiny_clip.visual.proj
        mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
        ref = tiny_clip.encode_image((images / 255 - mean) / std)
    assert grid == (4, 4)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_baseline_dense_logits_follow_the_maskclip_value_path(tiny_clip) -> None:
    vocab = _vocab(32)
    baseline = MaskCLIPDense(tiny_clip, vocab.text)
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        tokens, _ = baseline.penultimate(images)
        attn = tiny_clip.visual.transformer.resblocks[-1].attn
        ln_1 = tiny_clip.visual.transformer.resblocks[-1].ln_1
        width = attn.out_proj.in_features
        v = F.linear(
            ln_1(tokens[:, 1:]), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :]
        )
        dense = tiny_clip.visual.ln_post(attn.out_proj(v)) @ tiny_clip.visual.proj  # (1, 16, D)
        low = F.normalize(dense, dim=-1) @ vocab.text.t() / 0.07  # (1, 16, N)
        low = low.transpose(1, 2).reshape(1, -1, 4, 4)
        expected = F.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(baseline(images), expected, atol=1e-4, rtol=1e-4)


def test_stages_compose_to_the_core_forward_test(tiny_clip) -> None:
    """The timed stages, chained, reproduce ChimeraSegModel.forward_test exactly."""
    pipe = StudentPipeline("mit_b0", tiny_clip, _vocab(32)).eval()
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.inference_mode():
        t = stage_inputs(pipe, images)
        chained = pipe.upsample(t["logits"], (64, 64))
        fns = stage_functions(pipe, images)
        torch.testing.assert_close(chained, pipe(images), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fns["upsampling"](), chained)
        fast = pipe(images, head_stride=8)
        core_fast = pipe.model.forward_test(images, pipe.text, InferenceConfig(head_downsample=2))
        chunked = pipe(images, chunk_tokens=5)
    assert fast.shape == chained.shape == (1, 12, 64, 64)
    assert torch.equal(fast, core_fast)  # the benchmark times the core's option, no copy of it
    assert (chunked - chained).abs().max() <= 1e-5
    with pytest.raises(
        ValueError, match=r"head_stride must be 4 \(exact\) or 8 \(inexact\), got 2"
    ):
        pipe(images, head_stride=2)


def test_peak_memory_sees_a_large_temporary_allocation() -> None:
    with PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert mem.peak_mb is not None and mem.peak_mb >= 48
    assert mem.method != "none"


def test_measure_reports_median_of_repeats() -> None:
    calls = []
    m = measure(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=5)
    assert len(calls) == 7 and len(m.times_s) == 5
    assert m.median_s == sorted(m.times_s)[2]
    with pytest.raises(ValueError, match=r"need repeats >= 1 and warmup >= 0, got 0, 0"):
        measure(lambda: None, torch.device("cpu"), warmup=0, repeats=0)


def test_flop_count_includes_cpu_attention_and_mha_fast_path() -> None:
    from benchmarks.breakdown import count_flops

    q = k = v = torch.randn(1, 2, 8, 4)  # (B, H, L, E)
    with torch.inference_mode():
        sdpa = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert sdpa == 2 * (2 * 1 * 2 * 8 * 8 * 4)  # Q·Kᵀ and A·V, 2 FLOPs per multiply-add

    seq, width = 8, 16
    mha = torch.nn.MultiheadAttention(width, 2, batch_first=True).eval().requires_grad_(False)
    x = torch.randn(1, seq, width)
    with torch.inference_mode():
        counted = count_flops(lambda: mha(x, x, x, need_weights=False))
    projections = 2 * seq * (3 * width * width + width * width)
    attention = 2 * (2 * seq * seq * width)
    assert counted == projections + attention


def test_deploy_ratios_without_bf16_leave_its_ratio_out() -> None:
    """A batch-8 run may leave the emulated bf16 path out: fp32 ratios stay, bf16 ones are absent,
    and eager fp32 (the reference) cannot be left out."""
    from types import SimpleNamespace

    from benchmarks.deploy import _rates, run_deploy

    rates = _rates({"eager_fp32": [2.0, 4.0, 3.0], "onnx_fp32": [1.5, 1.5, 1.5]}, batch=8)
    assert rates["eager_fp32"]["images_per_s"] == pytest.approx(8 / 3.0)
    assert rates["onnx_fp32"]["ratio_vs_eager_fp32"] == pytest.approx(2.0)
    assert all("ratio_vs_eager_bf16" not in e for e in rates.values())
    args = SimpleNamespace(deploy_paths=["eager_bf16", "onnx_fp32"])
    with pytest.raises(ValueError, match="--deploy-paths must include eager_fp32"):
        run_deploy(args, None, None, torch.device("cpu"))
