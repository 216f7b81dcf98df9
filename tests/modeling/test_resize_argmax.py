"""resize_argmax: the labels of resize_logits + biased argmax, computed band by band."""

from __future__ import annotations

import pytest
import torch

import chimeraseg.modeling.inference as inference
from chimeraseg.modeling.inference import resize_argmax, resize_logits


@pytest.mark.parametrize(
    ("padded", "image", "low", "out"),
    [
        ((64, 96), (60, 90), (16, 24), (120, 180)),  # test-time resize back up, padded input
        ((64, 64), (64, 64), (16, 16), (64, 64)),
        ((32, 32), (30, 27), (32, 32), (61, 40)),  # logits on the padded grid (slide)
        ((32, 32), (32, 32), (8, 8), (7, 5)),  # output smaller than the logits
    ],
)
def test_labels_equal_the_full_logits_argmax(padded, image, low, out) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, *low)
    bias = torch.tensor([0.0, 0.0, 0.7, 0.0, 0.7, 0.0])
    full = resize_logits(logits, padded, image, out)  # (N, H, W)
    expected = (full + bias.view(-1, 1, 1)).argmax(dim=0)
    for band_elements in (1, 6 * out[1] * 3, 1 << 24):  # one row, three rows, everything
        got = resize_argmax(logits, padded, image, out, bias, band_elements=band_elements)
        assert got.dtype == torch.long and torch.equal(got, expected)
    assert torch.equal(resize_argmax(logits, padded, image, out), full.argmax(dim=0))


def test_full_resolution_work_is_bounded_by_the_band(monkeypatch) -> None:
    sizes = []
    lerp = torch.lerp

    def recording(start, end, weight):
        sizes.append(start.numel())
        return lerp(start, end, weight)

    monkeypatch.setattr(inference.torch, "lerp", recording)
    classes, out = 40, (300, 200)
    resize_argmax(torch.randn(classes, 10, 10), (40, 40), (40, 40), out, band_elements=40 * 200 * 8)
    assert max(sizes) <= classes * out[1] * 8  # never (N, H, W) = 2.4M elements at once
    assert sum(1 for s in sizes if s == classes * out[1] * 8) == out[0] // 8  # + one of 4 rows
