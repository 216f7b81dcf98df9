"""A web-demo model source without a model (class 0 everywhere): the demo's own costs only."""

from __future__ import annotations

import numpy as np
import torch


class ConstantSource:
    """Implements :class:`chimeraseg.demo.source.SegmentationSource` with constant answers."""

    description = "constant"
    default_vocabulary = ["cat", "sky"]
    default_unseen: list[int] = []
    default_gamma = 0.0

    def encode(self, names: list[str]) -> torch.Tensor:
        return torch.zeros(len(names), 4)

    def predict(self, image_rgb, text, unseen, gamma) -> np.ndarray:  # noqa: ANN001
        return np.zeros(image_rgb.shape[:2], np.int64)

    def class_similarity(self, image_rgb, region) -> None:  # noqa: ANN001
        return None

    def colors(self, names: list[str]) -> list[list[int]]:
        return [[10, 20, 30]] * len(names)

    def overlay(self, image_rgb, prediction, labels, colors) -> np.ndarray:  # noqa: ANN001
        return image_rgb.copy()
