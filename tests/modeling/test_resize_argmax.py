"""resize_argmax: the labels of resize_logits + biased argmax, computed band by band."""

from __future__ import annotations

import numpy as np
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


def test_source_taps_match_a_hand_computation() -> None:
    """Taps are floor/ceil of max((y + 0.5) / scale - 0.5, 0), clamped to the last input."""
    i0, i1, weight = inference._source_taps(4, 2.0, 2, torch.device("cpu"))
    # sources -0.25 -> 0, 0.25, 0.75, 1.25 (past the last input: both taps on it)
    assert i0.tolist() == [0, 0, 0, 1] and i1.tolist() == [1, 1, 1, 1]
    torch.testing.assert_close(weight, torch.tensor([0.0, 0.25, 0.75, 0.25]), rtol=0, atol=0)
    i0, i1, weight = inference._source_taps(4, 0.5, 3, torch.device("cpu"))
    # sources 0.5, 2.5, 4.5, 6.5: the last two lie beyond input 2 and clamp to it
    assert i0.tolist() == [0, 2, 2, 2] and i1.tolist() == [1, 2, 2, 2]
    assert weight[0].item() == 0.5


def test_source_coordinates_are_computed_in_double_precision() -> None:
    """Far from the origin the tap weights equal a float64 reference to float32 rounding."""
    out_len, scale, in_len = 60000, 3.0, 20000
    i0, _, weight = inference._source_taps(out_len, scale, in_len, torch.device("cpu"))
    source = np.maximum((np.arange(out_len, dtype=np.float64) + 0.5) / scale - 0.5, 0.0)
    np.testing.assert_array_equal(i0.numpy(), np.floor(source).astype(np.int64))
    np.testing.assert_allclose(weight.numpy(), source - np.floor(source), rtol=0, atol=1e-6)


def test_every_tensor_stays_on_the_logits_device() -> None:
    """Taps and labels are built on the logits' device (a CPU tap would not mix with them)."""
    logits = torch.empty(4, 5, 6, device="meta")
    labels = resize_argmax(logits, (20, 24), (18, 20), (9, 10), bias=torch.zeros(4))
    assert labels.device.type == "meta" and labels.shape == (9, 10)
    assert labels.dtype == torch.long


def _record_lerp(monkeypatch) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    lerp = torch.lerp

    def recording(start, end, weight):
        shapes.append(tuple(start.shape))
        return lerp(start, end, weight)

    monkeypatch.setattr(inference.torch, "lerp", recording)
    return shapes


def test_a_band_smaller_than_a_row_computes_one_row_at_a_time(monkeypatch) -> None:
    """band_elements below one output row still gives bands of exactly one row."""
    shapes = _record_lerp(monkeypatch)
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)
    got = resize_argmax(logits, (8, 10), (8, 10), (6, 9), band_elements=1)
    assert torch.equal(got, resize_logits(logits, (8, 10), (8, 10), (6, 9)).argmax(dim=0))
    assert shapes[1::2] == [(3, 1, 9)] * 6  # full-resolution lerps: one row each


def test_one_class_one_column_bands_use_the_whole_budget(monkeypatch) -> None:
    """With N * W = 1 a budget of 2 elements gives bands of 2 rows."""
    shapes = _record_lerp(monkeypatch)
    got = resize_argmax(torch.randn(1, 3, 2), (6, 4), (6, 4), (4, 1), band_elements=2)
    assert torch.equal(got, torch.zeros(4, 1, dtype=torch.long))
    assert shapes == [(1, 2, 2), (1, 2, 1)] * 2


def test_a_double_bias_is_added_in_the_logits_float32() -> None:
    """The bias is rounded to float32 before the add, as ``argmax(logits + bias.float())``."""
    logits = torch.tensor([1.0, 1.0 + 2.0**-23]).view(2, 1, 1).expand(2, 2, 2).contiguous()
    bias = torch.tensor([2.0**-24 + 2.0**-50, 0.0], dtype=torch.float64)
    # float32(bias[0]) = 2**-24 and 1 + 2**-24 rounds (to even) to 1: class 1 wins everywhere;
    # adding in float64 first would round up to 1 + 2**-23 and tie (first index, class 0).
    expected = (logits + bias.float().view(-1, 1, 1)).argmax(dim=0)[:1, :1].expand(4, 4)
    assert torch.equal(expected, torch.ones(4, 4, dtype=torch.long))
    assert torch.equal(resize_argmax(logits, (8, 8), (8, 8), (4, 4), bias), expected)
