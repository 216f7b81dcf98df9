"""The zero-shot training rule: unseen pixels become ignore (255); images are always kept."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chimeraseg import IGNORE_LABEL


def unseen_to_ignore_lut(unseen_ids: Sequence[int], ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """Builds the lookup table that maps unseen class ids to ``ignore_label``.

    Args:
        unseen_ids: Indices of the unseen classes (each in ``[0, 255)``).
        ignore_label: The ignore value.

    Returns:
        ``(256,)`` uint8 table, identity except ``lut[u] = ignore_label`` for unseen ``u``.

    Raises:
        ValueError: If an unseen id is not in ``[0, 255)``.
    """
    lut = np.arange(256, dtype=np.uint8)
    for u in unseen_ids:
        if not 0 <= int(u) < 255:
            raise ValueError(f"unseen class id {u} is not in [0, 255)")
        lut[int(u)] = ignore_label
    return lut


def mask_unseen(
    label: np.ndarray, unseen_ids: Sequence[int], ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
    """Applies the zero-shot rule to a label map (one NumPy gather, no per-pixel loop).

    Args:
        label: ``(H, W)`` uint8 label with class ids and ``ignore_label``.
        unseen_ids: Indices of the unseen classes.
        ignore_label: The ignore value.

    Returns:
        ``(H, W)`` uint8 copy of ``label`` with every unseen pixel set to ``ignore_label``.
    """
    if label.dtype != np.uint8:
        raise ValueError(f"label must be uint8, got {label.dtype}")
    return unseen_to_ignore_lut(unseen_ids, ignore_label)[label]
