"""COCO-Stuff-164k zero-shot (156 seen / 15 unseen): ``coco_stuff_164k_zs_{train,val}``.

Expects ``$DETECTRON2_DATASETS/coco/{train2017,val2017}`` images and the prepared
``coco/stuffthingmaps_detectron2/{train2017,val2017}`` labels (datasets/README.md).
"""

from __future__ import annotations

import os

from chimeraseg.d2.data.register_common import (
    datasets_root,
    register_sem_seg_dataset,
    split_metadata,
)
from chimeraseg.data.splits import get_split

_SPLITS = {"train": "train2017", "val": "val2017"}


def _get_coco_stuff_zs_meta() -> dict:
    """Metadata of the COCO-Stuff-171 zero-shot split."""
    return split_metadata(get_split("coco_stuff_171"))


def register_all_coco_stuff_zs(root: str) -> None:
    """Registers ``coco_stuff_164k_zs_train`` and ``coco_stuff_164k_zs_val`` under ``root``."""
    meta = _get_coco_stuff_zs_meta()
    coco = os.path.join(root, "coco")
    for split, dirname in _SPLITS.items():
        register_sem_seg_dataset(
            f"coco_stuff_164k_zs_{split}",
            image_dir=os.path.join(coco, dirname),
            label_dir=os.path.join(coco, "stuffthingmaps_detectron2", dirname),
            meta=meta,
            read_sizes=split == "val",
        )


register_all_coco_stuff_zs(datasets_root())
