"""NumPy image and logit resampling of the runtime, matching the PyTorch path's numerics.

- :func:`resize_shortest_edge`: detectron2's test-time ``ResizeShortestEdge`` (PIL bilinear on
  uint8, the same output size rule).
- :func:`pad_to_multiple`: bottom/right padding with the mean colour (the meta-architecture's
  ``ImageList`` padding: zero after normalisation).
- :func:`bilinear`: ``F.interpolate(..., mode="bilinear", align_corners=False)`` of class maps,
  with an explicit source step so that one call equals
  :func:`~chimeraseg.modeling.inference.resize_logits` (one resample from a padded grid).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "bilinear",
    "pad_to_multiple",
    "resize_logits",
    "resize_shortest_edge",
    "shortest_edge_size",
]


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """``(h, w)`` after resizing the short side to ``short`` (long side at most ``max_size``)."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > max_size:
        factor = max_size / max(new_h, new_w)
        new_h, new_w = new_h * factor, new_w * factor
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_shortest_edge(image: np.ndarray, short: int, max_size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB resized bilinearly (PIL) so its short side is ``short``.

    ``short == 0`` returns the image unchanged.
    """
    if short == 0:
        return image
    from PIL import Image

    h, w = shortest_edge_size(image.shape[0], image.shape[1], short, max_size)
    resized = Image.fromarray(image).resize((w, h), Image.BILINEAR)
    return np.asarray(resized)


def pad_to_multiple(images: np.ndarray, multiple: int, mean: np.ndarray) -> np.ndarray:
    """``(B, 3, H, W)`` float32 padded bottom/right to multiples of ``multiple`` with ``mean``."""
    h, w = images.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return images
    out = np.empty((*images.shape[:2], h + ph, w + pw), dtype=np.float32)
    out[...] = mean.reshape(1, 3, 1, 1)
    out[..., :h, :w] = images
    return out


def _axis(out_size: int, in_size: int, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of one axis (PyTorch's float32 ``align_corners=False`` rule)."""
    dst = np.arange(out_size, dtype=np.float32)
    src = np.maximum(np.float32(step) * (dst + np.float32(0.5)) - np.float32(0.5), 0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weight = np.clip(src - low, 0, 1).astype(np.float32)
    return low, high, weight


def bilinear(
    maps: np.ndarray, size: tuple[int, int], step: tuple[float, float] | None = None
) -> np.ndarray:
    """Bilinear resampling of ``(N, h, w)`` maps to ``(N, H, W)`` (``align_corners=False``).

    Args:
        maps: ``(N, h, w)`` float32.
        size: ``(H, W)``.
        step: source pixels per output pixel per axis; None = ``h / H``, ``w / W``.

    Returns:
        ``(N, H, W)`` float32, C-contiguous.
    """
    (h, w), (out_h, out_w) = maps.shape[-2:], size
    step_h, step_w = step if step is not None else (h / out_h, w / out_w)
    top, bottom, wy = _axis(out_h, h, step_h)
    left, right, wx = _axis(out_w, w, step_w)
    rows = maps[:, top, :] * (1 - wy)[:, None] + maps[:, bottom, :] * wy[:, None]  # (N, H, w)
    out = rows[:, :, left] * (1 - wx) + rows[:, :, right] * wx  # (N, H, W)
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_logits(
    logits: np.ndarray,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> np.ndarray:
    """One resample from the logits ``(N, h, w)`` of a padded input to the image's output size.

    The image is the top-left ``image_size`` block of the ``input_size`` input; output pixel
    ``y`` samples logit row ``(y + 0.5) · hi · h / (ho · hp) - 0.5`` (as the PyTorch path).
    """
    (hp, wp), (hi, wi), (ho, wo) = input_size, image_size, output_size
    h, w = logits.shape[-2:]
    # PyTorch receives the scale ho·hp / (hi·h) and steps by its float reciprocal.
    step = (1.0 / (ho * hp / (hi * h)), 1.0 / (wo * wp / (wi * w)))
    return bilinear(logits, output_size, step)
