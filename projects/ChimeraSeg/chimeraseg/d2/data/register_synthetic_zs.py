"""The bundled synthetic zero-shot dataset: ``synthetic_zs_{train,val}``.

Expects ``$DETECTRON2_DATASETS/synthetic_zs`` written by ``datasets/make_synthetic_zs_dataset.py``
(prepared COCO-Stuff layout).
"""

from __future__ import annotations

import os

from chimeraseg.d2.data.register_common import (
    datasets_root,
    register_sem_seg_dataset,
    split_metadata,
)
from chimeraseg.data.splits import get_split
from chimeraseg.data.synthetic import DATASET_DIRNAME, LABEL_DIRNAME, SPLIT_DIRS


def _get_synthetic_zs_meta() -> dict:
    """Metadata of the synthetic split."""
    return split_metadata(get_split("synthetic"))


def register_all_synthetic_zs(
    root: str, name_prefix: str = "synthetic_zs", replace: bool = False
) -> None:
    """Registers ``<name_prefix>_train`` and ``<name_prefix>_val`` under ``root``.

    Args:
        root: Datasets root holding ``synthetic_zs/``.
        name_prefix: Dataset name prefix (tests register temporary copies under other names).
        replace: Re-register existing names.
    """
    base = os.path.join(root, DATASET_DIRNAME)
    for split, dirname in SPLIT_DIRS.items():
        register_sem_seg_dataset(
            f"{name_prefix}_{split}",
            image_dir=os.path.join(base, dirname),
            label_dir=os.path.join(base, LABEL_DIRNAME, dirname),
            meta=_get_synthetic_zs_meta(),
            read_sizes=split == "val",
            replace=replace,
        )


register_all_synthetic_zs(datasets_root())
