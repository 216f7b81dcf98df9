"""PASCAL Context-459 validation for cross-dataset transfer: ``pascal_context_459_val``.

All 459 classes of the full PASCAL Context labels are the vocabulary, none is held out (mIoU).
Expects ``$DETECTRON2_DATASETS/VOCdevkit/VOC2010/JPEGImages`` and the 16-bit labels
``VOC2010/annotations_detectron2/pc459_val/<id>.tif`` (label = ``labels.txt`` id - 1, 65535 =
unlabeled) written by ``datasets/prepare_pascal_context_459.py`` (the CAT-Seg layout); the
images are those of ``VOC2010/pascalcontext_val.txt`` (or
``ImageSets/SegmentationContext/val.txt``).
"""

from __future__ import annotations

import os

from chimeraseg import IGNORE_LABEL_16BIT
from chimeraseg.d2.data.register_common import (
    datasets_root,
    register_sem_seg_dataset,
    split_metadata,
)
from chimeraseg.data.splits import get_split


def _get_pascal_context_459_meta() -> dict:
    """Metadata of PASCAL Context-459 (16-bit labels, ignore 65535)."""
    return split_metadata(get_split("pascal_context_459"), ignore_label=IGNORE_LABEL_16BIT)


def register_all_pascal_context_459(root: str) -> None:
    """Registers ``pascal_context_459_val`` under ``root``."""
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    register_sem_seg_dataset(
        "pascal_context_459_val",
        image_dir=os.path.join(voc, "JPEGImages"),
        label_dir=os.path.join(voc, "annotations_detectron2", "pc459_val"),
        meta=_get_pascal_context_459_meta(),
        read_sizes=True,
        split_lists=[
            os.path.join(voc, "pascalcontext_val.txt"),
            os.path.join(voc, "ImageSets", "SegmentationContext", "val.txt"),
        ],
        label_ext=".tif",
    )


register_all_pascal_context_459(datasets_root())
