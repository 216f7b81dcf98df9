"""Sliding-window offsets, shared by the PyTorch inference and the ONNX runtime (no torch)."""

from __future__ import annotations

__all__ = ["window_starts"]


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of sliding windows covering ``[0, size)`` (last window flush with the end).

    Args:
        size: image side.
        crop: window side (windows are clipped to the image when it is smaller).
        stride: step between windows.

    Returns:
        Sorted unique start offsets.
    """
    if crop <= 0 or stride <= 0:
        raise ValueError(f"window_starts: crop={crop} and stride={stride} must be positive")
    count = max(size - crop + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride, size - crop), 0) for i in range(count)})
