"""PASCAL Context-59 zero-shot (49 seen / 10 unseen).

Names: ``pascal_context_59_zs_{train,val}`` (split "zs3", the default),
``pascal_context_59_zs_cascade_{train,val}`` (split "cascade") and ``pascal_context_59_val``
(all 59 classes, none held out: cross-dataset evaluation, mIoU). Expects
``$DETECTRON2_DATASETS/VOCdevkit/VOC2010/JPEGImages`` and the prepared
``VOC2010/annotations_detectron2/pc59/{train,val}`` labels (datasets/README.md). ``JPEGImages``
holds every split, so a split's images are those of its list in ``ImageSets/SegmentationContext``
(or ``ImageSets/Main``, whichever the labels were prepared from).
"""

from __future__ import annotations

import os

from chimeraseg.d2.data.register_common import (
    datasets_root,
    register_sem_seg_dataset,
    split_metadata,
)
from chimeraseg.data.splits import get_split

# Split lists of prepare_pascal_context_59.py's --split-source context (default) and main.
_SPLIT_LIST_DIRS = ("SegmentationContext", "Main")
_VARIANT_PREFIXES = {
    "zs3": "pascal_context_59_zs",
    "cascade": "pascal_context_59_zs_cascade",
    "transfer": "pascal_context_59",
}


def _get_pascal_context_59_meta(variant: str = "zs3") -> dict:
    """Metadata of a PASCAL Context-59 split variant (``"zs3"``, ``"cascade"``, ``"transfer"``)."""
    return split_metadata(get_split("pascal_context_59", variant))


def register_all_pascal_context_zs(root: str) -> None:
    """Registers the zero-shot variants' train and val sets and the transfer val set."""
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    for variant, prefix in _VARIANT_PREFIXES.items():
        meta = _get_pascal_context_59_meta(variant)
        for split in ("val",) if variant == "transfer" else ("train", "val"):
            register_sem_seg_dataset(
                f"{prefix}_{split}",
                image_dir=os.path.join(voc, "JPEGImages"),
                label_dir=os.path.join(voc, "annotations_detectron2", "pc59", split),
                meta=meta,
                read_sizes=split == "val",
                split_lists=[
                    os.path.join(voc, "ImageSets", d, f"{split}.txt") for d in _SPLIT_LIST_DIRS
                ],
            )


register_all_pascal_context_zs(datasets_root())
