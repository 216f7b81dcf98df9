"""Your own zero-shot dataset: a split declared from class names and image + label folders.

From Python::

    from chimeraseg.d2.data.register_custom import register_zero_shot_folders
    register_zero_shot_folders(
        "my_data", root="/data/my_data", classes="classes.txt", unseen=["zebra", "lava"]
    )  # -> datasets my_data_train and my_data_val, split "my_data"

From a config (``DATASETS.CUSTOM.*``, applied by ``get_chimeraseg_cfg``)::

    DATASETS:
      CUSTOM:
        NAME: "my_data"
        ROOT: "/data/my_data"
        CLASSES_FILE: "/data/my_data/classes.txt"
        UNSEEN: ["zebra", "lava"]
      TRAIN: ("my_data_train",)
      TEST: ("my_data_val",)

Layout under ``root``: ``images/<split>/<id><image_ext>`` and ``labels/<split>/<id>.png``
(uint8, value ``i`` = the ``i``-th class name, 255 = ignore). Walk-through: datasets/README.md,
'Use your own dataset'.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from detectron2.config import CfgNode

from chimeraseg.d2.data.register_common import register_sem_seg_dataset, split_metadata
from chimeraseg.data.splits import (
    ZeroShotSplit,
    make_zero_shot_split,
    read_class_names,
    register_split,
)

__all__ = ["register_custom_from_config", "register_zero_shot_folder", "register_zero_shot_folders"]

IMAGES_DIRNAME, LABELS_DIRNAME = "images", "labels"


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    """A list of names, or the names of a file when ``value`` is a path."""
    if value is None:
        return None
    if isinstance(value, str):
        return read_class_names(value)
    return [str(v) for v in value]


def declare_split(
    name: str,
    classes: str | Sequence[str],
    unseen: str | Sequence[str] = (),
    seen: str | Sequence[str] | None = None,
    replace: bool = True,
) -> ZeroShotSplit:
    """Builds and registers a split from names or name files (see :func:`make_zero_shot_split`).

    Args:
        name: Split name.
        classes: Class names in label order, or a file with one per line.
        unseen: Unseen class names, or a file of them.
        seen: Seen class names, or a file; None = all classes that are not unseen.
        replace: Replace a split registered under ``name`` (re-running a script or config).
    """
    split = make_zero_shot_split(
        name, _names(classes), unseen=_names(unseen) or (),
        seen=_names(seen),
    )  # fmt: skip
    return register_split(split, replace=replace)


def register_zero_shot_folder(
    dataset_name: str,
    image_dir: str,
    label_dir: str,
    split: ZeroShotSplit,
    image_ext: str = ".jpg",
    evaluation: bool = False,
) -> None:
    """Registers one folder pair (lazily listed) with the metadata of ``split``.

    Args:
        dataset_name: Name for ``DATASETS.TRAIN`` / ``DATASETS.TEST``.
        image_dir: Directory of ``<id><image_ext>`` images.
        label_dir: Directory of ``<id>.png`` labels.
        split: The zero-shot split (class names, seen and unseen).
        image_ext: Image extension.
        evaluation: Read image sizes for evaluation (the evaluator needs ``height``/``width``).
    """
    register_sem_seg_dataset(
        dataset_name, image_dir, label_dir, split_metadata(split),
        image_ext=image_ext, read_sizes=evaluation, replace=True,
    )  # fmt: skip


def register_zero_shot_folders(
    name: str,
    root: str,
    classes: str | Sequence[str],
    unseen: str | Sequence[str] = (),
    seen: str | Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "val"),
    image_ext: str = ".jpg",
) -> ZeroShotSplit:
    """Declares split ``name`` and registers ``<name>_<split>`` for each of ``splits``.

    Relative class-name files are read relative to ``root``. Splits other than ``"train"`` are
    registered for evaluation.

    Returns:
        The registered split.
    """

    def under_root(value):
        if isinstance(value, str) and not os.path.isabs(value):
            return os.path.join(root, value)
        return value

    split = declare_split(name, under_root(classes), under_root(unseen), under_root(seen))
    for part in splits:
        register_zero_shot_folder(
            f"{name}_{part}",
            os.path.join(root, IMAGES_DIRNAME, part),
            os.path.join(root, LABELS_DIRNAME, part),
            split,
            image_ext=image_ext,
            evaluation=part != "train",
        )
    return split


def _list_or_file(node: CfgNode, key: str) -> str | list[str] | None:
    """``node[key]`` (a list) or ``node[key + '_FILE']`` (a path); setting both is an error."""
    names, path = list(node[key]), node[f"{key}_FILE"]
    if names and path:
        raise ValueError(
            f"config keys DATASETS.CUSTOM.{key} and DATASETS.CUSTOM.{key}_FILE are both set; "
            "give the names in one of them"
        )
    return path or (names or None)


def register_custom_from_config(cfg: CfgNode) -> ZeroShotSplit | None:
    """Applies ``DATASETS.CUSTOM.*`` (no-op when ``DATASETS.CUSTOM.NAME`` is empty).

    Raises:
        ValueError: Naming the key, when the classes are missing or a key is set twice.
    """
    c = cfg.DATASETS.CUSTOM
    if not c.NAME:
        return None
    if not c.ROOT:
        raise ValueError(
            f"config key DATASETS.CUSTOM.ROOT is empty (DATASETS.CUSTOM.NAME = {c.NAME!r})"
        )
    classes = _list_or_file(c, "CLASSES")
    if classes is None:
        raise ValueError(
            f"DATASETS.CUSTOM.NAME = {c.NAME!r} needs DATASETS.CUSTOM.CLASSES or CLASSES_FILE"
        )
    return register_zero_shot_folders(
        c.NAME, c.ROOT, classes,
        unseen=_list_or_file(c, "UNSEEN") or (), seen=_list_or_file(c, "SEEN"),
        splits=list(c.SPLITS), image_ext=c.IMAGE_EXT,
    )  # fmt: skip
