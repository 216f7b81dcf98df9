"""InferenceConfig: exact refusal messages and normalised window sizes."""

from __future__ import annotations

import re

import pytest
import torch

from chimeraseg.modeling.inference import InferenceConfig


def test_an_unsupported_precision_is_refused_with_the_full_message() -> None:
    """A float32 autocast dtype is refused, naming the value and the allowed ones."""
    message = (
        "InferenceConfig: precision=torch.float32 must be None, torch.bfloat16 or torch.float16"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        InferenceConfig(precision=torch.float32)


@pytest.mark.parametrize(
    ("name", "value"),
    [("slide_crop", (64, 64, 64)), ("slide_stride", (0, 32)), ("slide_crop", (64,))],
)
def test_bad_window_sizes_are_refused_with_the_full_message(name: str, value: tuple) -> None:
    """Three sides, one side or a zero side are refused, naming the key and the value."""
    message = f"InferenceConfig: {name}={value!r} must be two positive ints"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        InferenceConfig(**{name: value})


def test_window_sizes_keep_their_order_and_become_int_tuples() -> None:
    """Sides of 1 are valid, and (h, w) stay (h, w) as a tuple of ints."""
    config = InferenceConfig(mode="slide", slide_crop=[1, 5], slide_stride=(3.0, 7))
    assert config.slide_crop == (1, 5) and config.slide_stride == (3, 7)
    assert all(type(v) is int for v in (*config.slide_crop, *config.slide_stride))
