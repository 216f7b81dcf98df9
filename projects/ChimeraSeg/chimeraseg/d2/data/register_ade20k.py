"""ADE20K validation sets for cross-dataset transfer (all classes in the vocabulary, none held
out, mIoU): ``ade20k_150_val`` and ``ade20k_847_val``.

ADE20K-150 expects ``$DETECTRON2_DATASETS/ADEChallengeData2016/images/validation`` and the
prepared ``ADEChallengeData2016/annotations_detectron2/validation`` labels. ADE20K-847 expects
``ADE20K_2021_17_01/images_detectron2/validation/*.jpg`` and the 16-bit
``ADE20K_2021_17_01/annotations_detectron2/validation/*.tif`` labels (65535 = ignore), both
written by ``datasets/prepare_ade20k_847.py`` (the CAT-Seg / SAN layout).
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


def _get_ade20k_150_meta() -> dict:
    """Metadata of ADE20K-150 (``unseen_classes`` is empty: transfer evaluation only)."""
    return split_metadata(get_split("ade20k_150"))


def _get_ade20k_847_meta() -> dict:
    """Metadata of ADE20K-847 (16-bit labels, ignore 65535)."""
    return split_metadata(get_split("ade20k_847"), ignore_label=IGNORE_LABEL_16BIT)


def register_all_ade20k(root: str) -> None:
    """Registers ``ade20k_150_val`` and ``ade20k_847_val`` under ``root``."""
    ade = os.path.join(root, "ADEChallengeData2016")
    register_sem_seg_dataset(
        "ade20k_150_val",
        image_dir=os.path.join(ade, "images", "validation"),
        label_dir=os.path.join(ade, "annotations_detectron2", "validation"),
        meta=_get_ade20k_150_meta(),
        read_sizes=True,
    )
    full = os.path.join(root, "ADE20K_2021_17_01")
    register_sem_seg_dataset(
        "ade20k_847_val",
        image_dir=os.path.join(full, "images_detectron2", "validation"),
        label_dir=os.path.join(full, "annotations_detectron2", "validation"),
        meta=_get_ade20k_847_meta(),
        read_sizes=True,
        label_ext=".tif",
    )


register_all_ade20k(datasets_root())
