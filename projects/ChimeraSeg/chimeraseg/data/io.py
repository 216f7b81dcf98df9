"""Validated readers for images and label maps, and pairing of image/label directories.

Every failure raises :class:`DatasetError` naming the offending file, so that a corrupt sample in a
dataset of 100k images is found from the message alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IGNORE_LABEL = 255


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, or inconsistent with its image or class table."""


def _open(path: str, what: str) -> Image.Image:
    """Opens and fully decodes an image file, turning every failure into a DatasetError."""
    if not os.path.isfile(path):
        raise DatasetError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read {what} file {path}: {e}") from e


def read_image(path: str, apply_exif: bool = True) -> np.ndarray:
    """Reads an image as RGB.

    Args:
        path: Image file (any format PIL decodes; JPEG for the benchmarks).
        apply_exif: Apply the EXIF orientation, as ``detectron2.data.detection_utils.read_image``
            does.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Raises:
        DatasetError: If the file is missing or cannot be decoded.
    """
    img = _open(path, "image")
    if apply_exif:
        img = ImageOps.exif_transpose(img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def check_label_values(label: np.ndarray, num_classes: int, path: str) -> None:
    """Checks that every label value is a class id in ``[0, num_classes)`` or 255.

    Args:
        label: ``(H, W)`` uint8 label map.
        num_classes: Number of classes ``N``.
        path: File name used in the error message.

    Raises:
        DatasetError: Listing the offending values.
    """
    counts = np.bincount(label.ravel(), minlength=256)  # (256,) histogram, no per-pixel loop
    counts[IGNORE_LABEL] = 0
    bad = np.flatnonzero(counts[num_classes:]) + num_classes
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:20]) + (" ..." if bad.size > 20 else "")
        raise DatasetError(
            f"label file {path} has values {{{shown}}} that are neither a class id in "
            f"[0, {num_classes}) nor {IGNORE_LABEL}"
        )


def read_label(
    path: str, num_classes: int, expected_hw: tuple[int, int] | None = None
) -> np.ndarray:
    """Reads and validates a prepared label map (single channel, class ids and 255).

    Args:
        path: Label PNG (mode ``L``, or ``P`` whose indices are the labels).
        num_classes: Number of classes ``N``; values must be in ``[0, N)`` or 255.
        expected_hw: ``(H, W)`` of the matching image; checked if given.

    Returns:
        ``(H, W)`` uint8 label map.

    Raises:
        DatasetError: If the file is missing, unreadable, not single-channel, of the wrong size,
            or holds values outside the class range.
    """
    img = _open(path, "label")
    if img.mode not in ("L", "P"):
        raise DatasetError(f"label file {path} has mode {img.mode!r}; expected 'L' or 'P'")
    label = np.asarray(img, dtype=np.uint8)
    if expected_hw is not None and tuple(label.shape) != tuple(expected_hw):
        raise DatasetError(
            f"label file {path} has size (H, W) = {tuple(label.shape)} but its image has "
            f"{tuple(expected_hw)}"
        )
    check_label_values(label, num_classes, path)
    return label


def image_size(path: str) -> tuple[int, int]:
    """Reads ``(H, W)`` from an image header without decoding the pixels.

    Raises:
        DatasetError: If the file is missing or not an image.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (OSError, UnidentifiedImageError) as e:
        raise DatasetError(f"cannot read image file {path}: {e}") from e
    return h, w


def list_sem_seg_pairs(
    image_dir: str,
    label_dir: str,
    image_ext: str = ".jpg",
    label_ext: str = ".png",
    read_sizes: bool = False,
    image_ids: Sequence[str] | None = None,
) -> list[dict]:
    """Pairs every label file with its image, as detectron2 semantic-segmentation dicts.

    The label directory drives the listing (a prepared dataset may have images without labels).

    Args:
        image_dir: Directory of ``<id><image_ext>`` images.
        label_dir: Directory of ``<id><label_ext>`` prepared labels.
        image_ext: Image file extension.
        label_ext: Label file extension.
        read_sizes: Add ``height``/``width`` read from the image headers (costs one header read
            per image; the training mapper sets them anyway).
        image_ids: Restrict to these ids (in this order) instead of listing ``label_dir``.

    Returns:
        Dicts with ``file_name``, ``sem_seg_file_name``, ``image_id`` (and ``height``,
        ``width``), sorted by id.

    Raises:
        DatasetError: Naming the directory if either is missing or holds no labels, or naming the
            file if an image or a label is missing.
    """
    for what, d in (("image", image_dir), ("label", label_dir)):
        if not os.path.isdir(d):
            raise DatasetError(
                f"{what} directory not found: {d} (set $DETECTRON2_DATASETS and prepare the "
                "dataset as described in datasets/README.md)"
            )
    if image_ids is None:
        image_ids = sorted(
            f[: -len(label_ext)] for f in os.listdir(label_dir) if f.endswith(label_ext)
        )
    if not image_ids:
        raise DatasetError(f"no '*{label_ext}' label files in {label_dir}")
    records = []
    for image_id in image_ids:
        image_file = os.path.join(image_dir, image_id + image_ext)
        label_file = os.path.join(label_dir, image_id + label_ext)
        for what, f in (("image", image_file), ("label", label_file)):
            if not os.path.isfile(f):
                raise DatasetError(f"{what} file not found: {f}")
        record = {"file_name": image_file, "sem_seg_file_name": label_file, "image_id": image_id}
        if read_sizes:
            record["height"], record["width"] = image_size(image_file)
        records.append(record)
    return records
