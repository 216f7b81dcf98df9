"""Whole and sliding-window inference: overlap averages and per-image upsampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import chimeraseg.modeling.inference as inference
from chimeraseg.modeling.inference import slide_inference, upsample_logits, whole_inference


def _window_means(images: torch.Tensor) -> torch.Tensor:
    """Logits (B, 2, 1, 1): each window's channel-0 mean and its negation, constant over it."""
    mean = images[:, :1].mean(dim=(2, 3), keepdim=True)
    return torch.cat([mean, -mean], dim=1)


@pytest.mark.parametrize("batch", [1, 2])
def test_slide_inference_averages_the_windows_covering_each_pixel(batch: int) -> None:
    """Non-square crop and stride on 10x7: rows {0,4}+6, cols {0,3}+4, averaged per pixel."""
    images = torch.rand(batch, 3, 10, 7, generator=torch.Generator().manual_seed(0))
    out = slide_inference(_window_means, images, crop=(6, 4), stride=(4, 3))
    total, count = torch.zeros(batch, 1, 10, 7), torch.zeros(10, 7)
    for top in (0, 4):  # window_starts(10, 6, 4), by hand
        for left in (0, 3):  # window_starts(7, 4, 3), by hand
            mean = images[:, 0, top : top + 6, left : left + 4].mean(dim=(1, 2))
            total[:, 0, top : top + 6, left : left + 4] += mean.view(batch, 1, 1)
            count[top : top + 6, left : left + 4] += 1
    assert count.min() == 1 and count.max() == 4
    expected = total / count
    assert out.shape == (batch, 2, 10, 7)
    torch.testing.assert_close(out, torch.cat([expected, -expected], dim=1), rtol=0, atol=1e-6)


def test_whole_inference_upsamples_to_the_image_size() -> None:
    """One pass, upsampled bilinearly to the images' (H, W)."""
    images = torch.rand(2, 3, 6, 10, generator=torch.Generator().manual_seed(1))

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        return x[:, :2, ::2, ::2]

    expected = F.interpolate(images[:, :2, ::2, ::2], size=(6, 10), mode="bilinear")
    torch.testing.assert_close(whole_inference(logits_fn, images), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("batch", "classes", "grad", "calls"),
    [(2, 1, False, [1, 1]), (3, 2, False, [1, 1, 1]), (1, 3, False, [1]), (3, 2, True, [3])],
)
def test_upsampling_is_per_image_only_without_autograd(
    monkeypatch, batch: int, classes: int, grad: bool, calls: list[int]
) -> None:
    """Without autograd each image is upsampled alone; with it, one batched call; same values."""
    logits = torch.randn(batch, classes, 3, 4, generator=torch.Generator().manual_seed(2))
    # bilinear (align_corners=False), rows: taps of (y + 0.5) * 3 / 6 - 0.5, cols the same
    expected = F.interpolate(logits, size=(6, 8), mode="bilinear", align_corners=False)
    seen: list[int] = []
    interpolate = F.interpolate

    def recording(x: torch.Tensor, **kwargs) -> torch.Tensor:
        seen.append(x.shape[0])
        return interpolate(x, **kwargs)

    monkeypatch.setattr(inference.F, "interpolate", recording)
    with torch.set_grad_enabled(grad):
        out = upsample_logits(logits, (6, 8))
    assert seen == calls
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    corner = logits[:, :, 0, 0]  # output (0, 0) samples source (-0.25, -0.25) -> clamped to 0
    torch.testing.assert_close(out[:, :, 0, 0], corner, rtol=0, atol=0)
