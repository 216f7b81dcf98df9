"""PASCAL VOC 2012 zero-shot (15 seen / 5 unseen, background ignored): ``voc_20_zs_{train,val}``;
and ``voc_20_val``, the same validation images with all 20 classes and none held out, for
cross-dataset evaluation (mIoU; CAT-Seg's / SAN's "VOC-20").

Expects ``$DETECTRON2_DATASETS/VOCdevkit/VOC2012/JPEGImages`` and the prepared
``VOC2012/annotations_detectron2/{train,val}`` labels (datasets/README.md). ``JPEGImages`` holds
every split, so a split's images are those of its list in ``ImageSets/Segmentation``
(``train.txt``, or ``aug.txt`` when the labels were prepared with ``--aug``).
"""

from __future__ import annotations

import os

from chimeraseg.d2.data.register_common import (
    datasets_root,
    register_sem_seg_dataset,
    split_metadata,
)
from chimeraseg.data.splits import get_split


def _get_voc_20_meta() -> dict:
    """Metadata of the VOC-20 zero-shot split."""
    return split_metadata(get_split("voc_20"))


def register_all_voc_zs(root: str) -> None:
    """Registers ``voc_20_zs_train``, ``voc_20_zs_val`` and ``voc_20_val`` under ``root``."""
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    meta = _get_voc_20_meta()
    lists = os.path.join(voc, "ImageSets", "Segmentation")
    # The split list prepare_voc_sem_seg.py used: train.txt, or aug.txt with --aug.
    split_lists = {"train": ("train.txt", "aug.txt"), "val": ("val.txt",)}
    for split in ("train", "val"):
        register_sem_seg_dataset(
            f"voc_20_zs_{split}",
            image_dir=os.path.join(voc, "JPEGImages"),
            label_dir=os.path.join(voc, "annotations_detectron2", split),
            meta=meta,
            read_sizes=split == "val",
            split_lists=[os.path.join(lists, f) for f in split_lists[split]],
        )
    register_sem_seg_dataset(
        "voc_20_val",
        image_dir=os.path.join(voc, "JPEGImages"),
        label_dir=os.path.join(voc, "annotations_detectron2", "val"),
        meta=split_metadata(get_split("voc_20", "transfer")),
        read_sizes=True,
        split_lists=[os.path.join(lists, "val.txt")],
    )


register_all_voc_zs(datasets_root())
