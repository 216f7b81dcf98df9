"""Shared helper of the ``register_*.py`` modules: lazy semantic-segmentation registration.

Registration only stores paths and metadata; the file list is read when the dataset is first
requested (``DatasetCatalog.get``), so importing never touches the disk, and a dataset that is not
prepared fails then with a :class:`chimeraseg.data.io.DatasetError` naming the missing directory.
"""

from __future__ import annotations

import functools
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from chimeraseg.data.io import list_sem_seg_pairs
from chimeraseg.data.splits import ZeroShotSplit

IGNORE_LABEL = 255
EVALUATOR_TYPE = "zs_sem_seg"


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``), as detectron2's builtin datasets use it."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def split_metadata(split: ZeroShotSplit) -> dict:
    """The zero-shot metadata fields shared by every dataset of a split.

    Returns:
        ``stuff_classes``, ``stuff_colors``, ``seen_classes``, ``unseen_classes`` (index lists),
        ``class_split``, ``class_split_variant``, ``ignore_label`` and ``evaluator_type``.
    """
    return {
        "stuff_classes": list(split.class_names),
        "stuff_colors": [list(c) for c in split.stuff_colors],
        "seen_classes": list(split.seen),
        "unseen_classes": list(split.unseen),
        "class_split": split.name,
        "class_split_variant": split.variant,
        "ignore_label": IGNORE_LABEL,
        "evaluator_type": EVALUATOR_TYPE,
    }


def register_sem_seg_dataset(
    name: str,
    image_dir: str,
    label_dir: str,
    meta: dict,
    image_ext: str = ".jpg",
    read_sizes: bool = False,
    replace: bool = False,
) -> None:
    """Registers a lazily listed ``<image_dir>/<id><image_ext>`` + ``<label_dir>/<id>.png`` set.

    Args:
        name: Dataset name.
        image_dir: Image directory.
        label_dir: Prepared label directory (uint8 PNG, class ids and 255).
        meta: Metadata from :func:`split_metadata` (``image_root``/``sem_seg_root`` are added).
        image_ext: Image file extension.
        read_sizes: Put ``height``/``width`` (from image headers) into the dicts; done for
            evaluation splits, the training mapper sets them itself.
        replace: Re-register ``name`` if it exists (tests); otherwise an existing name is kept.
    """
    if name in DatasetCatalog.list():
        if not replace:
            return
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    loader = functools.partial(
        list_sem_seg_pairs, image_dir, label_dir, image_ext=image_ext, read_sizes=read_sizes
    )
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(image_root=image_dir, sem_seg_root=label_dir, **meta)
