"""Shared helper of the ``register_*.py`` modules: lazy semantic-segmentation registration.

Registration only stores paths and metadata; the file list is read when the dataset is first
requested (``DatasetCatalog.get``), so importing never touches the disk, and a dataset that is not
prepared fails then with a :class:`chimeraseg.data.io.DatasetError` naming the missing directory.
The images drive the listing: an image without a label is an error naming it, unless
``DATASETS.SKIP_IMAGES_WITHOUT_LABEL`` (see :func:`dataset_dicts`) skips it with a logged count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog

from chimeraseg import IGNORE_LABEL, ignore_label_for
from chimeraseg.data.io import ids_from_split_lists, list_sem_seg_pairs
from chimeraseg.data.splits import ZeroShotSplit

EVALUATOR_TYPE = "zs_sem_seg"
_REQUIRED_METADATA = ("stuff_classes", "seen_classes", "unseen_classes")


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``), as detectron2's builtin datasets use it."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def split_metadata(split: ZeroShotSplit, ignore_label: int | None = None) -> dict:
    """The zero-shot metadata fields shared by every dataset of a split.

    ``ignore_label`` is 255, or 65535 for the 16-bit labels of vocabularies above 255 classes;
    None derives it from the class count (:func:`chimeraseg.ignore_label_for`), so a custom set
    of 256+ classes never reads class 255 as ignore.

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
        "ignore_label": ignore_label_for(len(split.class_names))
        if ignore_label is None
        else ignore_label,
        "evaluator_type": EVALUATOR_TYPE,
    }


def zero_shot_metadata(dataset_name: str) -> dict[str, Any]:
    """The zero-shot metadata of a registered dataset: the one check the model, mapper and
    evaluator rely on.

    Returns:
        ``stuff_classes`` (names), ``seen_classes`` and ``unseen_classes`` (index lists) and
        ``ignore_label``.

    Raises:
        KeyError: naming the dataset and the missing keys.
    """
    meta = MetadataCatalog.get(dataset_name)
    missing = [k for k in _REQUIRED_METADATA if not hasattr(meta, k)]
    if missing:
        raise KeyError(
            f"dataset {dataset_name!r} has no metadata {missing}; is it registered by "
            "chimeraseg.d2.data (DATASETS.TRAIN / DATASETS.TEST)?"
        )
    out: dict[str, Any] = {k: [int(i) for i in meta.get(k)] for k in _REQUIRED_METADATA[1:]}
    out["stuff_classes"] = list(meta.stuff_classes)
    out["ignore_label"] = int(meta.get("ignore_label", IGNORE_LABEL))
    return out


class SemSegListing:
    """The loader ``DatasetCatalog`` stores for a registered dataset (called lazily).

    Calling it lists the image/label pairs with :func:`chimeraseg.data.io.list_sem_seg_pairs`:
    from the images of ``image_dir``, or from the first of ``split_lists`` that lists every label
    (PASCAL VOC / Context, whose image directory is shared by all splits).
    """

    def __init__(
        self,
        image_dir: str,
        label_dir: str,
        image_ext: str = ".jpg",
        read_sizes: bool = False,
        split_lists: Sequence[str] = (),
        label_ext: str = ".png",
    ) -> None:
        self.image_dir, self.label_dir, self.image_ext = image_dir, label_dir, image_ext
        self.read_sizes, self.split_lists = read_sizes, tuple(split_lists)
        self.label_ext = label_ext

    def __call__(self, skip_missing_labels: bool = False) -> list[dict]:
        """The dataset dicts; unpaired samples raise, or are skipped with a logged count."""
        ids = None
        if self.split_lists:
            ids = ids_from_split_lists(self.split_lists, self.label_dir, self.label_ext)
        return list_sem_seg_pairs(
            self.image_dir,
            self.label_dir,
            image_ext=self.image_ext,
            label_ext=self.label_ext,
            read_sizes=self.read_sizes,
            image_ids=ids,
            skip_missing_labels=skip_missing_labels,
        )


def dataset_dicts(names: Sequence[str], skip_missing_labels: bool = False) -> list[dict]:
    """The dicts of registered datasets, concatenated (``DATASETS.TRAIN`` / one test set).

    Args:
        names: registered dataset names.
        skip_missing_labels: ``DATASETS.SKIP_IMAGES_WITHOUT_LABEL``: leave out unpaired samples of
            datasets registered here (with a logged count) instead of raising.

    Raises:
        chimeraseg.data.io.DatasetError: naming images without labels (unless skipped).
        ValueError: when a dataset has no sample.
    """
    out: list[dict] = []
    for name in names:
        loader = DatasetCatalog[name] if name in DatasetCatalog.list() else None
        if isinstance(loader, SemSegListing):
            dicts = loader(skip_missing_labels=skip_missing_labels)
        else:
            dicts = DatasetCatalog.get(name)  # raises naming the unregistered dataset
        if not dicts:
            raise ValueError(f"dataset {name!r} is empty")
        out.extend(dicts)
    return out


def register_sem_seg_dataset(
    name: str,
    image_dir: str,
    label_dir: str,
    meta: dict,
    image_ext: str = ".jpg",
    read_sizes: bool = False,
    replace: bool = False,
    split_lists: Sequence[str] = (),
    label_ext: str = ".png",
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
        split_lists: Candidate split lists (see :class:`SemSegListing`) for an image directory
            shared by several splits; empty = every image of ``image_dir``.
        label_ext: Label extension (``".tif"`` for the 16-bit labels of PC-459 / ADE-847).
    """
    if name in DatasetCatalog.list():
        if not replace:
            return
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    loader = SemSegListing(image_dir, label_dir, image_ext, read_sizes, split_lists, label_ext)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(image_root=image_dir, sem_seg_root=label_dir, **meta)
