"""Dataset mapper for zero-shot semantic segmentation (training and evaluation)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T

from chimeraseg.d2.data.augmentations import build_zero_shot_augmentations
from chimeraseg.d2.data.register_common import zero_shot_metadata
from chimeraseg.data.io import read_image, read_label
from chimeraseg.data.zero_shot import mask_unseen


def compact_label_dtype(num_classes: int, ignore_label: int = 255) -> np.dtype:
    """The smallest label dtype holding the ids ``0..num_classes-1`` and ``ignore_label`` exactly.

    uint8 up to 255 classes with ignore 255; int16 beyond (ADE20K-847: ids up to 846); int32
    when the ignore value itself needs it (ADE20K-847's 65535).

    Raises:
        ValueError: naming the values when they do not fit int32.
    """
    largest = max(num_classes - 1, ignore_label)
    if ignore_label >= 0 and largest <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if np.iinfo(np.int16).min <= ignore_label and largest <= np.iinfo(np.int16).max:
        return np.dtype(np.int16)
    if np.iinfo(np.int32).min <= ignore_label and largest <= np.iinfo(np.int32).max:
        return np.dtype(np.int32)
    raise ValueError(
        f"labels with {num_classes} classes and ignore value {ignore_label} do not fit int32"
    )


class ZeroShotDatasetMapper:
    """Reads an image and its label, applies the zero-shot rule and the augmentations.

    Training, in the inductive AND the transductive setting: every unseen-class pixel becomes
    ``ignore_label`` before augmentation; images are never dropped (the settings differ only in
    the model). The augmented image is also the frozen CLIP teacher's input, so nothing else is
    needed for it. Evaluation: the image is resized for inference; labels are not loaded (the
    evaluator reads them from ``sem_seg_file_name``).

    Output dict: ``image`` ``(3, H, W)`` uint8 RGB tensor, ``sem_seg`` ``(H, W)`` tensor of
    :func:`compact_label_dtype` (training only; uint8, int16 for more than 255 classes, int32 for
    an ignore value beyond int16: the batch crosses to the GPU in 1-4 bytes a pixel instead of
    int64's 8, and the model widens it there),
    ``valid_hw`` = ``(h, w)`` the augmented image size before padding (the real pixels are the
    top-left ``h x w`` block; the model keeps padding out of the latent regions and SGD),
    ``height``/``width`` of the original image, ``file_name``, ``image_id`` and
    ``sem_seg_file_name`` when present.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[T.Augmentation],
        num_classes: int,
        unseen_classes: Sequence[int],
        ignore_label: int = 255,
        pad_to: tuple[int, int] | None = None,
        image_format: str = "RGB",
    ) -> None:
        """Args:
        is_train: Training mode (zero-shot rule, label loading, padding).
        augmentations: Augmentations applied to image and label together.
        num_classes: Number of classes ``N`` (label values must be in ``[0, N)`` or 255).
        unseen_classes: Indices of the unseen classes, set to ``ignore_label`` in training.
        ignore_label: The ignore value.
        pad_to: ``(H, W)``: training images smaller than this are padded bottom/right (image 0,
            label ``ignore_label``), so that every crop has the crop size.
        image_format: Only ``"RGB"`` (the model and the CLIP teacher take RGB).
        """
        if image_format != "RGB":
            raise ValueError(f"INPUT.FORMAT must be 'RGB' for ChimeraSeg, got {image_format!r}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.num_classes = num_classes
        self.unseen_classes = tuple(int(c) for c in unseen_classes)
        self.ignore_label = ignore_label
        self.pad_to = tuple(pad_to) if pad_to is not None else None
        self.label_dtype = compact_label_dtype(num_classes, ignore_label)

    @classmethod
    def from_config(
        cls, cfg: CfgNode, is_train: bool = True, dataset_name: str | None = None
    ) -> dict:
        """Builds the arguments from the config and the dataset metadata.

        Reads ``INPUT.FORMAT`` and the keys of :func:`build_zero_shot_augmentations`; the class
        count, unseen classes and ignore label come from the metadata of ``dataset_name``
        (default: the first of ``DATASETS.TRAIN`` or ``DATASETS.TEST``).
        """
        if dataset_name is None:
            names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
            if not names:
                raise ValueError(f"DATASETS.{'TRAIN' if is_train else 'TEST'} is empty")
            dataset_name = names[0]
        meta = zero_shot_metadata(dataset_name)
        crop = cfg.INPUT.CROP
        pad_to = tuple(crop.SIZE) if is_train and crop.ENABLED and crop.TYPE == "absolute" else None
        return {
            "is_train": is_train,
            "augmentations": build_zero_shot_augmentations(cfg, is_train),
            "num_classes": len(meta["stuff_classes"]),
            "unseen_classes": meta["unseen_classes"],
            "ignore_label": meta["ignore_label"],
            "pad_to": pad_to,
            "image_format": cfg.INPUT.FORMAT,
        }

    def _pad(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pads ``(H, W, 3)`` image / ``(H, W)`` label bottom-right up to ``pad_to``."""
        h, w = label.shape
        ph, pw = max(self.pad_to[0] - h, 0), max(self.pad_to[1] - w, 0)
        if ph == 0 and pw == 0:
            return image, label
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=self.ignore_label)
        return image, label

    def __call__(self, dataset_dict: dict) -> dict:
        """Maps one detectron2 dataset dict (``file_name``, ``sem_seg_file_name``, ...).

        Raises:
            chimeraseg.data.io.DatasetError: Naming the file for a missing/corrupt image or
                label, a label whose size differs from its image, or out-of-range label values.
            KeyError: If a training dict has no ``sem_seg_file_name``.
        """
        record = copy.deepcopy(dataset_dict)
        image = read_image(record["file_name"])  # (H, W, 3) uint8 RGB
        height, width = image.shape[:2]
        label = None
        if self.is_train:
            if "sem_seg_file_name" not in record:
                raise KeyError(f"training sample {record['file_name']} has no sem_seg_file_name")
            label = read_label(record["sem_seg_file_name"], self.num_classes, (height, width))
            label = mask_unseen(label, self.unseen_classes, self.ignore_label)
        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image, label = aug_input.image, aug_input.sem_seg
        record["valid_hw"] = tuple(int(v) for v in image.shape[:2])  # before padding
        if label is not None and self.pad_to is not None:
            image, label = self._pad(image, label)
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if label is not None:
            record["sem_seg"] = torch.as_tensor(label.astype(self.label_dtype))  # (H, W)
        record["height"], record["width"] = height, width
        return record
