"""Dataset tables, zero-shot splits, validated I/O and the synthetic dataset (no detectron2)."""

from chimeraseg.data.io import DatasetError, read_image, read_label
from chimeraseg.data.splits import (
    ZeroShotSplit,
    get_split,
    make_zero_shot_split,
    read_class_names,
    register_split,
)
from chimeraseg.data.synthetic import make_synthetic_dataset
from chimeraseg.data.zero_shot import mask_unseen

__all__ = [
    "DatasetError",
    "ZeroShotSplit",
    "get_split",
    "make_zero_shot_split",
    "make_synthetic_dataset",
    "mask_unseen",
    "read_image",
    "read_class_names",
    "read_label",
    "register_split",
]
