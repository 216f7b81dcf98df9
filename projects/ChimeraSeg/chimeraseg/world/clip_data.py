"""Captioned images of the synthetic world, for training and checking its CLIP.

The world CLIP learns what a web-trained CLIP knows about the world: every class, seen and unseen,
from image-level captions only (no masks). Segmentation training never sees unseen labels; that
rule is about the segmentation data, which this module never touches.

Seed namespaces. The segmentation dataset draws sample ``i`` of split ``k`` from
``np.random.default_rng([seed, k, i])``; this module draws from
``np.random.default_rng([WORLD_NAMESPACE, purpose, seed, i])``, a different entropy key for every
dataset seed below ``WORLD_NAMESPACE``, so no CLIP image is a segmentation train or val image.
Held-out images (``purpose=HELD_OUT``) are disjoint from the CLIP's training images likewise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from chimeraseg.data.synthetic import render_class_patch, render_sample

__all__ = [
    "WORLD_NAMESPACE",
    "TRAIN",
    "HELD_OUT",
    "world_rng",
    "caption",
    "CaptionedPool",
    "render_pool",
    "render_held_out_patches",
]

WORLD_NAMESPACE = 0x57524C44  # "WRLD"
TRAIN, HELD_OUT = 0, 1  # purposes


def world_rng(purpose: int, seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a world-CLIP image set (see the module docstring)."""
    return np.random.default_rng([WORLD_NAMESPACE, purpose, seed, index])


def caption(
    names: Sequence[str], present: Sequence[int], template: str, rng: np.random.Generator
) -> str:
    """One caption naming the classes in ``present`` in random order.

    Args:
        names: Class names.
        present: Indices into ``names`` (at least one).
        template: Prompt template with one ``{}`` (e.g. ``"a photo of a {}."``).
        rng: Generator for the order.

    Returns:
        e.g. ``"a photo of a sky, grass and tree."``.
    """
    order = [names[i] for i in rng.permutation(np.asarray(present))]
    phrase = order[0] if len(order) == 1 else ", ".join(order[:-1]) + " and " + order[-1]
    return template.format(phrase)


@dataclass
class CaptionedPool:
    """Rendered training images with their per-pixel classes (used for captions only).

    Attributes:
        images: ``(P, S, S, 3)`` uint8 RGB.
        labels: ``(P, S, S)`` uint8 class index into ``names`` (255 = unlabeled outline).
        names: Class names of the world the pool was rendered from.
    """

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]


def render_pool(
    names: Sequence[str], size: int, num_images: int, seed: int, single_class_fraction: float
) -> CaptionedPool:
    """Renders the CLIP's training images: scenes as in the dataset, and single-class images.

    Args:
        names: Classes the images may show (all classes, or the seen ones for a control CLIP).
        size: Side ``S`` of the square images.
        num_images: ``P``.
        seed: World-CLIP seed.
        single_class_fraction: Share of images that show one class over the whole image.

    Returns:
        The :class:`CaptionedPool`.
    """
    names = tuple(names)
    images = np.empty((num_images, size, size, 3), np.uint8)
    labels = np.empty((num_images, size, size), np.uint8)
    for i in range(num_images):
        rng = world_rng(TRAIN, seed, i)
        if rng.random() < single_class_fraction:
            c = int(rng.integers(len(names)))
            images[i] = render_class_patch(rng, (size, size), names[c])
            labels[i] = c
        else:
            images[i], labels[i] = render_sample(rng, (size, size), names)
    return CaptionedPool(images=images, labels=labels, names=names)


def render_held_out_patches(
    names: Sequence[str], per_class: int, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Single-class images never used in training, at random scales, for the quality gate.

    Each image is one class's texture rendered at a random side in ``[size/2, 3·size/2]`` and
    resized to ``size``, like the scale jitter of segmentation training.

    Returns:
        ``(len(names)·per_class, size, size, 3)`` uint8 RGB and ``(len(names)·per_class,)`` class
        indices.
    """
    images, targets = [], []
    for c, name in enumerate(names):
        for j in range(per_class):
            rng = world_rng(HELD_OUT, seed, c * per_class + j)
            side = int(rng.integers(size // 2, 3 * size // 2 + 1))
            patch = render_class_patch(rng, (side, side), name)
            images.append(cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR))
            targets.append(c)
    return np.stack(images), np.asarray(targets)
