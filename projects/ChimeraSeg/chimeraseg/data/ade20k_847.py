"""ADE20K-847 conversion (used by ``datasets/prepare_ade20k_847.py``; no detectron2).

An ADE20K_2021_17_01 ``*_seg.png`` encodes the object class index of a pixel as
``R // 10 * 256 + G``; the 847 benchmark classes (``class_names/ade20k_847.tsv``) map to labels
0...846 and every other index to 65535 (ignore). As in CAT-Seg, an image whose short side exceeds
512 is resized to a 512 short side (long side ``round(long · 512 / short)``) with OpenCV's
``INTER_LINEAR`` for the image and ``INTER_NEAREST`` for the labels (:func:`resize_like_cat_seg`),
so the prepared pixels are CAT-Seg's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

from chimeraseg import IGNORE_LABEL_16BIT
from chimeraseg.data.class_tables import ade20k_847_table
from chimeraseg.data.io import DatasetError, image_size, output_damage, read_image

MAX_SHORT_SIDE = 512


@dataclass(frozen=True)
class ADE847Job:
    """One validation image: ``src`` (``.jpg``, its ``_seg.png`` beside it) -> two outputs."""

    src: str
    image_out: str
    label_out: str
    skip_bad: bool = False


@lru_cache(maxsize=1)
def ade847_lut() -> np.ndarray:
    """``(max index + 1,)`` uint16 table: ADE20K object class index -> label, else 65535."""
    table = ade20k_847_table()
    lut = np.full(max(index for index, _ in table) + 1, IGNORE_LABEL_16BIT, dtype=np.uint16)
    for label, (index, _) in enumerate(table):
        lut[index] = label
    return lut


def decode_seg(path: str) -> np.ndarray:
    """``(H, W)`` int64 object class indices of a ``*_seg.png`` (``R // 10 * 256 + G``)."""
    if not os.path.isfile(path):
        raise DatasetError(f"ADE20K segmentation file not found: {path}")
    seg = read_image(path).astype(np.int64)  # (H, W, 3) RGB
    return seg[..., 0] // 10 * 256 + seg[..., 1]


def to_labels(indices: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Object class indices -> ``(H, W)`` uint16 labels (indices beyond the table -> 65535)."""
    inside = indices < len(lut)
    return np.where(inside, lut[np.where(inside, indices, 0)], IGNORE_LABEL_16BIT).astype(np.uint16)


def short_side_size(h: int, w: int) -> tuple[int, int] | None:
    """``(new_h, new_w)`` with a short side of 512, or None when it is 512 or less already."""
    if min(h, w) <= MAX_SHORT_SIDE:
        return None
    if h <= w:
        return MAX_SHORT_SIDE, round(w * MAX_SHORT_SIDE / h)
    return round(h * MAX_SHORT_SIDE / w), MAX_SHORT_SIDE


def resize_like_cat_seg(
    image: np.ndarray, labels: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """CAT-Seg's resampling: ``cv2.INTER_LINEAR`` image, ``cv2.INTER_NEAREST`` labels.

    ``INTER_LINEAR`` samples at pixel centres (``src = (dst + 0.5)·scale - 0.5``, two taps per
    axis, no antialiasing, 11-bit fixed-point weights); ``INTER_NEAREST`` takes
    ``src = floor(dst·scale)``, *not* the pixel centre. PIL's ``NEAREST`` (pixel centres) and its
    antialiased ``BILINEAR``, used here before, gave other values: resizing 683 × 1024 to
    512 × 768, PIL's nearest takes another source pixel in 2 of every 3 rows and columns.

    Args:
        image: ``(H, W, 3)`` uint8.
        labels: ``(H, W)`` uint16 labels (nearest, so mapping before or after resizing is equal).
        size: ``(new_h, new_w)``.

    Returns:
        ``(new_h, new_w, 3)`` uint8 image and ``(new_h, new_w)`` uint16 labels.
    """
    dsize = (size[1], size[0])  # OpenCV takes (width, height)
    resized = cv2.resize(image, dsize, interpolation=cv2.INTER_LINEAR)
    return resized, cv2.resize(labels, dsize, interpolation=cv2.INTER_NEAREST)


def _save(array: np.ndarray, path: str, image_format: str) -> None:
    """Atomic write (``*.tmp`` then rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    Image.fromarray(array).save(tmp, format=image_format)
    os.replace(tmp, path)


def convert_ade847(job: ADE847Job) -> tuple[str, str]:
    """Converts one image (for ``run_label_jobs(run_one=...)``): ``(status, message)``.

    Raises:
        DatasetError: Naming the file, for a missing or unreadable image / segmentation or
            different sizes (unless ``job.skip_bad``: then status ``"bad"``).
    """
    damage = _damaged_outputs(job) if os.path.isfile(job.image_out) else "missing image"
    if damage is None:
        return "existing", ""
    try:
        image = read_image(job.src)  # (H, W, 3)
        labels = to_labels(decode_seg(job.src[: -len(".jpg")] + "_seg.png"), ade847_lut())
        if labels.shape != image.shape[:2]:
            raise DatasetError(
                f"{job.src}: segmentation size {labels.shape} differs from the image's "
                f"{image.shape[:2]}"
            )
    except DatasetError as e:
        if not job.skip_bad:
            raise
        return "bad", str(e)
    size = short_side_size(*labels.shape)
    if size is not None:
        image, labels = resize_like_cat_seg(image, labels, size)
    _save(labels, job.label_out, "TIFF")
    _save(image, job.image_out, "JPEG")  # PIL's default quality, as CAT-Seg writes them
    remade = damage not in ("missing image", "missing label")
    return ("remade", damage) if remade else ("converted", "")


def _damaged_outputs(job: ADE847Job) -> str | None:
    """Why the outputs of an earlier run cannot be kept, or None when both decode at the size
    the conversion gives (the source's, short side capped at 512)."""
    if not os.path.isfile(job.label_out):
        return "missing label"
    try:
        h, w = image_size(job.src)
    except DatasetError as e:
        return str(e)
    size = short_side_size(h, w) or (h, w)
    return output_damage(job.image_out, size) or output_damage(job.label_out, size)
