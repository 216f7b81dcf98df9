"""Data of the pseudo-mask quality: images with full labels, and the zero-shot hiding rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from chimeraseg.data.io import list_sem_seg_pairs, read_image, read_label
from chimeraseg.data.zero_shot import mask_unseen
from chimeraseg.evaluation.pseudo_mask_quality.metrics import IGNORE_LABEL


@dataclass(frozen=True)
class Sample:
    """One image with its full ground truth.

    Attributes:
        image_id: file id.
        image: ``(3, H, W)`` float RGB in 0..255 (the teacher's input convention).
        true: ``(H, W)`` long ground truth in dataset ids (unseen classes present), 255 ignore.
    """

    image_id: str
    image: torch.Tensor
    true: torch.Tensor


def _resize_short_side(
    image: np.ndarray, label: np.ndarray, short_side: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear image / nearest label resize so that the short side is ``short_side``."""
    h, w = label.shape
    if short_side is None or min(h, w) == short_side:
        return image, label
    scale = short_side / min(h, w)
    size = (int(w * scale + 0.5), int(h * scale + 0.5))  # PIL (W, H), detectron2's rounding
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    return image, label


def _center_crop(
    image: np.ndarray, label: np.ndarray, crop: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Centre crop to ``crop = (h, w)`` (each side at most the image's)."""
    if crop is None:
        return image, label
    h, w = label.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top : top + ch, left : left + cw], label[top : top + ch, left : left + cw]


def load_samples(
    image_dir: str,
    label_dir: str,
    num_classes: int,
    *,
    short_side: int | None = None,
    crop: tuple[int, int] | None = None,
    max_images: int | None = None,
    image_ext: str = ".jpg",
    label_ext: str = ".png",
) -> list[Sample]:
    """Reads images and full labels (sorted by id), resized and optionally centre-cropped.

    Args:
        image_dir: directory of ``<id><image_ext>`` images.
        label_dir: directory of ``<id><label_ext>`` uint8 labels (``0..N-1``, 255).
        num_classes: ``N`` (labels are validated against it).
        short_side: resize so that the short side has this many pixels (None = as stored).
        crop: centre crop ``(h, w)`` after resizing (None = whole image).
        max_images: use only the first images (None = all).
        image_ext: image file extension.
        label_ext: label file extension.

    Returns:
        The samples.
    """
    records = list_sem_seg_pairs(image_dir, label_dir, image_ext, label_ext)
    samples = []
    for record in records[:max_images]:
        image = read_image(record["file_name"])
        label = read_label(record["sem_seg_file_name"], num_classes, image.shape[:2])
        image, label = _center_crop(*_resize_short_side(image, label, short_side), crop)
        samples.append(
            Sample(
                image_id=record["image_id"],
                image=torch.from_numpy(np.array(image)).permute(2, 0, 1).float(),  # (3, H, W)
                true=torch.from_numpy(np.array(label)).long(),  # (H, W)
            )
        )
    return samples


def hide_unseen(
    true: torch.Tensor, seen_ids: Sequence[int], unseen_ids: Sequence[int]
) -> torch.Tensor:
    """The training labels of an image: unseen classes become 255 (the zero-shot rule of
    :func:`chimeraseg.data.zero_shot.mask_unseen`), seen dataset id ``seen_ids[i]`` becomes ``i``
    (the model's label lookup table).

    Args:
        true: ``(H, W)`` long ground truth in dataset ids, 255 ignore.
        seen_ids: seen dataset ids.
        unseen_ids: unseen dataset ids.

    Returns:
        ``(H, W)`` long training labels ``0..Ns-1`` or 255.
    """
    masked = mask_unseen(true.numpy().astype(np.uint8), unseen_ids, IGNORE_LABEL)
    lut = torch.full((256,), IGNORE_LABEL, dtype=torch.long)
    lut[list(seen_ids)] = torch.arange(len(seen_ids))
    return lut[torch.from_numpy(masked).long()]
