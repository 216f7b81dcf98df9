"""Training augmentations of the paper (mmsegmentation-style) as detectron2 Augmentations.

Pipeline (:func:`build_zero_shot_augmentations`): random resize with ratio 0.5-2.0 of a base scale
(:class:`RandomRatioResize`), 512x512 random crop with a category-area constraint (detectron2's
``RandomCrop_CategoryAreaConstraint``), random flip, photometric distortion
(:class:`PhotometricDistortion`: brightness, contrast, saturation, hue jitter).
"""

# ruff: noqa: NPY002 -- detectron2 augmentations draw from the global NumPy RNG, which detectron2
# seeds per data-loader worker (seed_all_rng); a private Generator would break that contract.
from __future__ import annotations

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, Transform
from PIL import Image

from chimeraseg import IGNORE_LABEL


class RandomRatioResize(T.Augmentation):
    """Resizes to a random ratio of a base scale, keeping the aspect ratio.

    The base scale is ``(short_edge, long_edge)`` (mmsegmentation's ``img_scale=(2048, 512)``):
    the image is scaled by ``r * min(short_edge / short, long_edge / long)`` with
    ``r ~ U(ratio_range)``, i.e. its short side reaches ``r * short_edge`` unless its long side
    would exceed ``r * long_edge``.
    """

    def __init__(
        self, short_edge: int, long_edge: int, ratio_range: tuple[float, float] = (0.5, 2.0)
    ) -> None:
        """Args:
        short_edge: Base short side (e.g. 512).
        long_edge: Base long side (e.g. 2048).
        ratio_range: ``(low, high)`` of the uniform ratio ``r``.
        """
        super().__init__()
        if not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must satisfy 0 < low <= high, got {ratio_range}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        """Samples the ratio for an ``(H, W, C)`` image and returns the resize."""
        h, w = image.shape[:2]
        ratio = np.random.uniform(*self.ratio_range)
        scale = ratio * min(self.short_edge / min(h, w), self.long_edge / max(h, w))
        new_h, new_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        return T.ResizeTransform(h, w, new_h, new_w, Image.BILINEAR)


class PhotometricTransform(Transform):
    """Deterministic colour jitter of an RGB uint8 image; labels and coordinates are unchanged.

    A parameter set to ``None`` skips that step. Order: brightness, contrast (if
    ``contrast_first``), saturation, hue, contrast (otherwise), as in mmsegmentation.
    """

    def __init__(
        self,
        brightness_delta: float | None,
        contrast_alpha: float | None,
        contrast_first: bool,
        saturation_alpha: float | None,
        hue_delta: int | None,
    ) -> None:
        super().__init__()
        self._set_attributes(locals())

    @staticmethod
    def _affine(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """Jitters an ``(H, W, 3)`` uint8 RGB image."""
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
        if self.brightness_delta is not None:
            img = self._affine(img, beta=self.brightness_delta)
        if self.contrast_first and self.contrast_alpha is not None:
            img = self._affine(img, alpha=self.contrast_alpha)
        if self.saturation_alpha is not None or self.hue_delta is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # uint8: H in [0, 180), S, V in [0, 255]
            if self.saturation_alpha is not None:
                hsv[..., 1] = self._affine(hsv[..., 1], alpha=self.saturation_alpha)
            if self.hue_delta is not None:
                hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + self.hue_delta) % 180).astype(
                    np.uint8
                )
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not self.contrast_first and self.contrast_alpha is not None:
            img = self._affine(img, alpha=self.contrast_alpha)
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()


class PhotometricDistortion(T.Augmentation):
    """Random brightness, contrast, saturation and hue jitter, each applied with probability 1/2.

    Defaults are mmsegmentation's ``PhotoMetricDistortion``: brightness +-32, contrast and
    saturation x[0.5, 1.5], hue +-18 (OpenCV hue units, i.e. +-36 degrees).
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        prob: float = 0.5,
    ) -> None:
        super().__init__()
        self._init(locals())

    def _maybe(self, value: float | int) -> float | int | None:
        return value if np.random.rand() < self.prob else None

    def get_transform(self, image: np.ndarray) -> Transform:
        """Samples the jitter parameters (the image itself is not inspected)."""
        return PhotometricTransform(
            brightness_delta=self._maybe(
                np.random.uniform(-self.brightness_delta, self.brightness_delta)
            ),
            contrast_alpha=self._maybe(np.random.uniform(*self.contrast_range)),
            contrast_first=bool(np.random.randint(2)),
            saturation_alpha=self._maybe(np.random.uniform(*self.saturation_range)),
            hue_delta=self._maybe(int(np.random.randint(-self.hue_delta, self.hue_delta + 1))),
        )


def _cfg_value(cfg: CfgNode, dotted_key: str):
    """Reads ``cfg.<dotted_key>``, with an error naming the key if the config lacks it."""
    node = cfg
    for part in dotted_key.split("."):
        if part not in node:
            raise KeyError(
                f"config key {dotted_key} is missing; call "
                "chimeraseg.d2.config.add_chimeraseg_config(cfg) first"
            )
        node = node[part]
    return node


def build_zero_shot_augmentations(cfg: CfgNode, is_train: bool) -> list[T.Augmentation]:
    """The augmentation list for training or evaluation.

    Config keys read (training): ``INPUT.MIN_SIZE_TRAIN`` (one value: base short side, 512),
    ``INPUT.MAX_SIZE_TRAIN`` (base long side, 2048), ``INPUT.RESIZE_RATIO_RANGE`` ((0.5, 2.0)),
    ``INPUT.CROP.{ENABLED,TYPE,SIZE,SINGLE_CATEGORY_MAX_AREA}``, ``INPUT.RANDOM_FLIP``
    ("horizontal"/"vertical"/"none"), ``INPUT.COLOR_AUG_SSD`` (photometric distortion on/off).
    Evaluation: ``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST`` (0 disables the resize).
    """
    if not is_train:
        min_size = _cfg_value(cfg, "INPUT.MIN_SIZE_TEST")
        if min_size == 0:
            return []
        return [T.ResizeShortestEdge(min_size, _cfg_value(cfg, "INPUT.MAX_SIZE_TEST"))]
    min_sizes = _cfg_value(cfg, "INPUT.MIN_SIZE_TRAIN")
    if len(min_sizes) != 1:
        raise ValueError(
            f"INPUT.MIN_SIZE_TRAIN must hold one base short side for the ratio resize, got "
            f"{tuple(min_sizes)}"
        )
    augs: list[T.Augmentation] = [
        RandomRatioResize(
            min_sizes[0],
            _cfg_value(cfg, "INPUT.MAX_SIZE_TRAIN"),
            tuple(_cfg_value(cfg, "INPUT.RESIZE_RATIO_RANGE")),
        )
    ]
    if _cfg_value(cfg, "INPUT.CROP.ENABLED"):
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                _cfg_value(cfg, "INPUT.CROP.TYPE"),
                _cfg_value(cfg, "INPUT.CROP.SIZE"),
                _cfg_value(cfg, "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA"),
                IGNORE_LABEL,
            )
        )
    flip = _cfg_value(cfg, "INPUT.RANDOM_FLIP")
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    if _cfg_value(cfg, "INPUT.COLOR_AUG_SSD"):
        augs.append(PhotometricDistortion())
    return augs
