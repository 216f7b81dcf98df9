"""ADE20K-150 validation for cross-dataset transfer (all classes in the vocabulary, none held
out): ``ade20k_150_val``. Expects ``$DETECTRON2_DATASETS/ADEChallengeData2016/images/validation``
and the prepared ``ADEChallengeData2016/annotations_detectron2/validation`` labels.
"""

from __future__ import annotations

import os

from chimeraseg.d2.data.register_common import (
    datasets_root,
    register_sem_seg_dataset,
    split_metadata,
)
from chimeraseg.data.splits import get_split


def _get_ade20k_150_meta() -> dict:
    """Metadata of ADE20K-150 (``unseen_classes`` is empty: transfer evaluation only)."""
    return split_metadata(get_split("ade20k_150"))


def register_all_ade20k(root: str) -> None:
    """Registers ``ade20k_150_val`` under ``root``."""
    ade = os.path.join(root, "ADEChallengeData2016")
    register_sem_seg_dataset(
        "ade20k_150_val",
        image_dir=os.path.join(ade, "images", "validation"),
        label_dir=os.path.join(ade, "annotations_detectron2", "validation"),
        meta=_get_ade20k_150_meta(),
        read_sizes=True,
    )


register_all_ade20k(datasets_root())
