"""Whole-image and sliding-window inference around a low-resolution logits function.

The paper does not say which; the choice is ``TEST.MODE`` (docs/METHOD.md, 'Inference').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from chimeraseg.modeling.csh import DEFAULT_CHUNK_TOKENS
from chimeraseg.utils.windows import window_starts

__all__ = [
    "INFERENCE_MODES",
    "InferenceConfig",
    "LogitsFn",
    "upsample_logits",
    "resize_argmax",
    "resize_logits",
    "whole_inference",
    "slide_inference",
    "window_starts",
]

# Maps images (B, 3, H', W') to low-resolution logits (B, N, h', w').
LogitsFn = Callable[[torch.Tensor], torch.Tensor]
INFERENCE_MODES = ("whole", "slide")  # docs/METHOD.md, 'Inference'


@dataclass(frozen=True)
class InferenceConfig:
    """How :meth:`~chimeraseg.modeling.ChimeraSegModel.forward_test` runs (``TEST.*`` keys).

    Attributes:
        mode: ``"whole"`` (one pass) or ``"slide"`` (overlap-averaged windows).
        slide_crop: window ``(h, w)`` of ``"slide"``.
        slide_stride: window step ``(h, w)`` of ``"slide"``.
        head_downsample: INEXACT speed option, off at 1: ``k > 1`` average-pools the decoder
            output ``k x k`` (``ceil_mode``) before the CSH, which then runs at stride ``4k``.
        chunk_tokens: CSH positions per chunk without autograd (exact); 0 = one pass.
        precision: autocast dtype of the student and the CSH (``torch.bfloat16``; float16 on
            GPUs without bfloat16); None = float32. The cosine logits stay float32.
        compile: run the student and decoder through ``torch.compile`` (compiled once per model
            on first use; the CSH's chunk loop and the cosine stay eager). Same values up to
            float reassociation; the first call pays the compilation.
    """

    mode: str = "whole"
    slide_crop: tuple[int, int] = (512, 512)
    slide_stride: tuple[int, int] = (341, 341)
    head_downsample: int = 1
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    precision: torch.dtype | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.mode not in INFERENCE_MODES:
            raise ValueError(f"InferenceConfig: mode={self.mode!r} is not one of {INFERENCE_MODES}")
        for name, minimum in (("head_downsample", 1), ("chunk_tokens", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"InferenceConfig: {name}={value!r} must be an int >= {minimum}")
        if self.precision not in (None, torch.bfloat16, torch.float16):
            raise ValueError(
                f"InferenceConfig: precision={self.precision!r} must be None, "
                "torch.bfloat16 or torch.float16"
            )
        for name in ("slide_crop", "slide_stride"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or min(value) <= 0:
                raise ValueError(f"InferenceConfig: {name}={value!r} must be two positive ints")
            object.__setattr__(self, name, (int(value[0]), int(value[1])))


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of logits to ``size``.

    The low-resolution logits are made class-major (contiguous) first, so the output is too:
    bilinear upsampling keeps a channels-last input channels-last, and every consumer that
    reads one class map at a time (the evaluator's class scan, an argmax over classes) then
    gathers with a stride of ``N`` floats, about 20x slower for 171 classes at 512x512 (a
    strided copy of the whole output). Copying the small input costs ~1/16 of that.
    Without autograd the images are upsampled one at a time into one preallocated output (no
    batch-sized temporaries; each image's source stays cache-resident). The values equal one
    batched ``F.interpolate``.

    Args:
        logits: ``(B, N, h, w)``, any strides (e.g. channels-last views).
        size: output ``(H, W)``.

    Returns:
        ``(B, N, H, W)`` contiguous.
    """
    size = (int(size[0]), int(size[1]))
    logits = logits.contiguous()  # (B, N, h, w) class-major; see above
    if torch.is_grad_enabled() or logits.shape[0] == 1:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    out = logits.new_empty(*logits.shape[:2], *size)  # (B, N, H, W)
    for i in range(logits.shape[0]):
        out[i : i + 1] = F.interpolate(
            logits[i : i + 1], size=size, mode="bilinear", align_corners=False
        )  # (1, N, H, W)
    return out


def resize_logits(
    logits: torch.Tensor,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> torch.Tensor:
    """One bilinear resample from low-resolution logits of a padded input to an output size.

    The logits cover the whole padded network input (``input_size``); the image occupies its
    top-left ``image_size`` block and is wanted at ``output_size`` (e.g. the original size
    before a test-time resize). Each output pixel samples the logit field where it lies in the
    input, in one pass: upsampling to the padded size, cropping and resizing again (detectron2's
    ``sem_seg_postprocess``) passes over every class map twice and blurs twice. When
    ``output_size == image_size`` the values equal upsampling to ``input_size`` then cropping.

    Args:
        logits: ``(N, h, w)`` logits over the padded input, any strides.
        input_size: ``(Hp, Wp)`` padded network input.
        image_size: ``(H', W')`` image inside it.
        output_size: ``(H, W)`` requested.

    Returns:
        ``(N, H, W)`` contiguous logits.
    """
    (hp, wp), (hi, wi), (ho, wo) = input_size, image_size, output_size
    h, w = logits.shape[-2:]
    # Output pixel y samples input row (y + 0.5) * hi / ho - 0.5, i.e. logit row
    # (y + 0.5) / scale_h - 0.5 with scale_h = ho * hp / (hi * h) (align_corners=False).
    scale_h, scale_w = ho * hp / (hi * h), wo * wp / (wi * w)
    source = logits.contiguous()[None]  # (1, N, h, w) class-major
    out = torch.ops.aten.upsample_bilinear2d(source, [ho, wo], False, scale_h, scale_w)
    return out[0]  # (N, H, W)


# Elements of one band of full-resolution logits in resize_argmax (64 MiB of float32).
BAND_ELEMENTS = 1 << 24


def _source_taps(
    out_len: int, scale: float, in_len: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps (``align_corners=False``) of ``out_len`` outputs on ``in_len`` inputs.

    Output ``y`` samples input ``max((y + 0.5) / scale - 0.5, 0)`` as PyTorch's bilinear
    upsampling with an explicit scale does. Returns ``(i0, i1, weight of i1)``, each ``(out_len,)``.
    """
    y = torch.arange(out_len, device=device, dtype=torch.float64)
    source = ((y + 0.5) / scale - 0.5).clamp(min=0)
    i0 = source.floor().long().clamp(max=in_len - 1)
    i1 = (i0 + 1).clamp(max=in_len - 1)
    return i0, i1, (source - i0).float()


def resize_argmax(
    logits: torch.Tensor,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    bias: torch.Tensor | None = None,
    band_elements: int = BAND_ELEMENTS,
) -> torch.Tensor:
    """Class ids at ``output_size`` from low-resolution logits, without all full-size logits.

    The labels of :func:`resize_logits` followed by ``argmax(logits + bias)``, computed for a
    band of output rows at a time: peak memory is about ``band_elements`` floats plus the
    ``(H, W)`` labels, whatever the class count (a 6000x6000 image with 12 classes would need
    1.7 GB of logits at once).

    Args:
        logits: ``(N, h, w)`` logits over the padded network input.
        input_size: ``(Hp, Wp)`` padded network input.
        image_size: ``(H', W')`` image inside it.
        output_size: ``(H, W)`` requested.
        bias: ``(N,)`` added to the logits before the argmax (the unseen bias), or None.
        band_elements: full-resolution logit elements computed at once (>= one row).

    Returns:
        ``(H, W)`` int64 class ids (first index on ties).
    """
    (hp, wp), (hi, wi), (ho, wo) = input_size, image_size, output_size
    n, h, w = logits.shape
    rows_y0, rows_y1, rows_fy = _source_taps(ho, ho * hp / (hi * h), h, logits.device)
    x0, x1, fx = _source_taps(wo, wo * wp / (wi * w), w, logits.device)
    logits = logits.float()
    labels = torch.empty(ho, wo, dtype=torch.long, device=logits.device)
    band = max(1, band_elements // max(n * wo, 1))
    for start in range(0, ho, band):
        y0, y1 = rows_y0[start : start + band], rows_y1[start : start + band]
        fy = rows_fy[start : start + band].view(1, -1, 1)
        rows = torch.lerp(logits[:, y0], logits[:, y1], fy)  # (N, b, w)
        full = torch.lerp(rows[:, :, x0], rows[:, :, x1], fx)  # (N, b, W)
        if bias is not None:
            full += bias.to(full).view(-1, 1, 1)
        labels[start : start + band] = full.argmax(dim=0)
    return labels


def whole_inference(logits_fn: LogitsFn, images: torch.Tensor) -> torch.Tensor:
    """Runs ``logits_fn`` on the whole images and upsamples once to their size.

    Args:
        logits_fn: images ``(B, 3, H, W)`` -> logits ``(B, N, h, w)``.
        images: ``(B, 3, H, W)``.

    Returns:
        ``(B, N, H, W)`` bilinearly upsampled (``align_corners=False``) logits.
    """
    return upsample_logits(logits_fn(images), tuple(images.shape[-2:]))


def slide_inference(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    crop: tuple[int, int],
    stride: tuple[int, int],
) -> torch.Tensor:
    """Sliding-window inference with overlap-averaged logits.

    Each window's logits are upsampled once to the window size and accumulated; every pixel's
    result is the mean over the windows covering it.

    Args:
        logits_fn: images ``(B, 3, h_c, w_c)`` -> logits ``(B, N, h, w)``.
        images: ``(B, 3, H, W)``.
        crop: window ``(height, width)``.
        stride: step ``(vertical, horizontal)``.

    Returns:
        ``(B, N, H, W)`` logits.
    """
    height, width = images.shape[-2:]
    total: torch.Tensor | None = None
    count = images.new_zeros(1, 1, height, width)
    for top in window_starts(height, crop[0], stride[0]):
        for left in window_starts(width, crop[1], stride[1]):
            bottom, right = min(top + crop[0], height), min(left + crop[1], width)
            window = images[..., top:bottom, left:right]  # (B, 3, h_c, w_c)
            logits = whole_inference(logits_fn, window)  # (B, N, h_c, w_c)
            if total is None:
                total = logits.new_zeros(*logits.shape[:2], height, width)
            total[..., top:bottom, left:right] += logits
            count[..., top:bottom, left:right] += 1
    assert total is not None  # at least one window always exists
    return total / count
