"""resize_logits: one bilinear resample from the head's logits of a padded input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chimeraseg.modeling.inference import resize_logits, upsample_logits


def _bilinear_field(low: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Samples ``(N, h, w)`` at fractional logit coordinates (edge-clamped), the plain way."""

    def taps(coord: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coord = np.clip(coord, 0, n - 1)
        i0 = np.floor(coord).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, coord - i0

    y0, y1, fy = taps(rows, low.shape[1])
    x0, x1, fx = taps(cols, low.shape[2])
    fy, fx = fy[None, :, None], fx[None, None, :]
    top = low[:, y0][:, :, x0] * (1 - fx) + low[:, y0][:, :, x1] * fx
    bottom = low[:, y1][:, :, x0] * (1 - fx) + low[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


def test_equal_output_size_equals_upsampling_then_cropping() -> None:
    low = torch.randn(1, 5, 16, 24)  # head logits of a 64x96 padded input
    full = upsample_logits(low, (64, 96))[0]  # (5, 64, 96)
    out = resize_logits(low[0], (64, 96), (50, 90), (50, 90))
    torch.testing.assert_close(out, full[:, :50, :90], rtol=0, atol=0)
    assert out.is_contiguous()


@pytest.mark.parametrize("output", [(100, 180), (37, 61), (50, 45)])
def test_each_output_pixel_samples_the_logit_field_where_it_lies(output) -> None:
    low = torch.randn(5, 16, 24, dtype=torch.float64)
    image, padded = (50, 90), (64, 96)
    out = resize_logits(low, padded, image, output)
    assert out.shape == (5, *output)
    # output pixel centre -> input pixel coordinate -> logit coordinate (align_corners=False)
    y_in = (np.arange(output[0]) + 0.5) * image[0] / output[0] - 0.5
    x_in = (np.arange(output[1]) + 0.5) * image[1] / output[1] - 0.5
    rows = (y_in + 0.5) * low.shape[1] / padded[0] - 0.5
    cols = (x_in + 0.5) * low.shape[2] / padded[1] - 0.5
    expected = _bilinear_field(low.numpy(), rows, cols)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-10)


def test_one_resample_is_not_the_two_step_blur() -> None:
    # The old post-processing upsampled to the padded size, cropped and resized again.
    low = torch.randn(5, 16, 24, dtype=torch.float64)
    full = upsample_logits(low[None], (64, 96))[0, :, :50, :90]
    two_step = F.interpolate(full[None], size=(37, 61), mode="bilinear", align_corners=False)[0]
    assert not torch.allclose(resize_logits(low, (64, 96), (50, 90), (37, 61)), two_step)
