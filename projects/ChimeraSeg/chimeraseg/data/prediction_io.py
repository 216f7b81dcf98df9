"""Predictions as files other programs read: a label PNG per image and the names of its values.

A label PNG holds one class index per pixel, the argmax over the vocabulary, so pixel value ``i``
means ``names[i]`` of the JSON written beside it. The bit depth follows the vocabulary, not the
image, so every PNG of one run has the same type: 8 bits up to 256 classes, 16 bits up to 65,536
(ADE20K-847, PASCAL Context-459). Predictions have no ignore value; 255 is an ordinary class index
in a vocabulary of more than 255 names. :func:`chimeraseg.data.io.read_label` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from PIL import Image

from chimeraseg.utils.output_files import atomic_open, atomic_path

__all__ = ["label_dtype", "write_label_png", "write_vocabulary_json"]


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """The PNG sample type for a vocabulary: ``uint8`` up to 256 classes, else ``uint16``.

    Raises:
        ValueError: For fewer than 1 or more than 65,536 classes.
    """
    if not 1 <= num_classes <= 65536:
        raise ValueError(f"a label PNG holds 1 to 65536 classes, not {num_classes}")
    return np.uint8 if num_classes <= 256 else np.uint16


def write_label_png(path: str, labels: np.ndarray, num_classes: int) -> None:
    """Writes ``(H, W)`` class indices as a single-channel PNG (8 or 16 bits, by ``num_classes``).

    Args:
        path: Output ``.png`` file; its folder is created.
        labels: ``(H, W)`` integer array of class indices in ``[0, num_classes)``.
        num_classes: Vocabulary size, which fixes the bit depth (:func:`label_dtype`).

    Raises:
        ValueError: If ``labels`` is not 2-D, not integer, or holds an index outside the
            vocabulary (naming the value and the file).
    """
    dtype = label_dtype(num_classes)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: labels must be a 2-D integer array, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels.max() if labels.max() >= num_classes else labels.min()
        raise ValueError(f"{path}: class index {int(bad)} is outside [0, {num_classes})")
    # PIL writes uint16 arrays as 16-bit greyscale PNGs ("I;16"), uint8 as 8-bit ("L"); a new
    # file renamed over ``path`` (a symbolic link there is replaced, never written through).
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(labels.astype(dtype))).save(tmp, format="PNG")


def write_vocabulary_json(
    path: str, names: Sequence[str], unseen: Sequence[bool], gamma: float
) -> None:
    """Writes the meaning of a run's label PNGs: value ``i`` is ``names[i]``.

    Args:
        path: Output ``.json`` file.
        names: Class names in index order (synonyms joined by ", " as given).
        unseen: Per class, whether it received the unseen bias ``gamma``.
        gamma: The unseen-logit bias used for the argmax.
    """
    if len(names) != len(unseen):
        raise ValueError(f"{len(names)} names but {len(unseen)} unseen flags")
    record = {
        "classes": [
            {"index": i, "name": n, "unseen": bool(u)}
            for i, (n, u) in enumerate(zip(names, unseen))
        ],
        "png_dtype": np.dtype(label_dtype(len(names))).name,
        "gamma": gamma,
    }
    with atomic_open(path, "w") as f:  # a new file renamed over ``path``
        json.dump(record, f, indent=1, allow_nan=False)  # strict JSON: never a NaN γ
