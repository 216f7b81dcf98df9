"""The demo's image loop and legend, shared by the PyTorch demo and the ONNX demo (no detectron2).

A demo object offers ``names`` (the vocabulary), ``unseen`` (one flag per class), ``gamma``,
``predict(image) -> (H, W) labels``, ``draw(image, labels) -> (H', W, 3) RGB`` and, when it can,
``similarity(image) -> (H, W, 3) RGB``. :func:`blend_overlay` is the drawing of a machine without
detectron2 (its Visualizer also outlines and names the regions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from chimeraseg.data.io import DatasetError, read_image
from chimeraseg.data.prediction_io import write_label_png, write_vocabulary_json
from chimeraseg.utils.output_files import OutputError, atomic_path, confirm_written, plan_outputs

__all__ = [
    "UNSEEN_SUFFIX",
    "blend_overlay",
    "image_outputs",
    "legend_strip",
    "palette",
    "run_on_images",
    "write_png",
]

UNSEEN_SUFFIX = " *"


def palette(count: int, seed: int = 0) -> list[list[int]]:
    """``count`` RGB colours (a fixed seeded palette, for drawing without detectron2)."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 256, (count, 3)).tolist()


def legend_strip(
    labels: np.ndarray, names: Sequence[str], colors: Sequence[Sequence[int]], width: int
) -> np.ndarray:
    """A white ``(h, width, 3)`` strip listing the predicted classes with their colours.

    Args:
        labels: ``(H, W)`` class indices.
        names: display names per class (``" *"`` marks unseen classes).
        colors: RGB colour per class.
        width: strip width (the overlay's).
    """
    present = np.unique(np.asarray(labels)).tolist()
    rows = max(1, (len(present) + 2) // 3) + 1
    strip = np.full((rows * 18 + 6, width, 3), 255, dtype=np.uint8)
    col_w = max(width // 3, 1)
    for i, c in enumerate(present):
        y, x = 6 + (i // 3) * 18, 4 + (i % 3) * col_w
        cv2.rectangle(strip, (x, y), (x + 12, y + 12), [int(v) for v in colors[c]], -1)
        cv2.putText(strip, names[c], (x + 16, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0))
    cv2.putText(
        strip, "* = unseen class", (4, rows * 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90)
    )
    return strip


def blend_overlay(
    image: np.ndarray, labels: np.ndarray, colors: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """``(H, W, 3)`` uint8: the image blended with each pixel's class colour."""
    table = np.asarray(colors, dtype=np.float32)  # (N, 3)
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * table[np.asarray(labels)]
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def image_outputs(paths: list[str], output: str, similarity: bool, labels: bool) -> list[dict]:
    """:func:`~chimeraseg.utils.output_files.plan_outputs` for :func:`run_on_images`' files.

    Raises:
        OutputError: an output would replace an input or another output of the run.
    """
    suffixes = [".png"] + (["_labels.png"] if labels else [])
    suffixes += ["_similarity.png"] if similarity else []
    return plan_outputs(paths, output, suffixes)  # no input lies in output (vocabulary.json)


def write_png(path: str, image_rgb: np.ndarray) -> str:
    """Writes an RGB image with OpenCV (a new file renamed over ``path``); returns ``path`` once
    it is on disk.

    Raises:
        OutputError: naming ``path`` when OpenCV could not write it.
    """
    with atomic_path(path) as tmp:
        try:
            ok = cv2.imwrite(tmp, np.ascontiguousarray(image_rgb[..., ::-1]))  # RGB -> BGR
        except cv2.error as e:
            raise OutputError(f"{path} was not written: {e}") from None
        if not ok:
            raise OutputError(f"{path} was not written (is the output folder writable?)")
    return confirm_written(path)


def run_on_images(
    demo: Any, paths: list[str], output: str, similarity: bool, labels: bool = False
) -> int:
    """Writes ``<output>/<stem>.png`` (and ``<stem>_similarity.png``) per image.

    With ``labels``, also ``<stem>_labels.png`` (the class index of every pixel, 8 or 16 bits by
    vocabulary size) and, once, ``vocabulary.json`` naming the indices
    (:mod:`chimeraseg.data.prediction_io`). Files that are not readable images are skipped with a
    one-line note. No output replaces an input or another output of the run (checked before
    any work), and every file is confirmed on disk.

    Returns:
        The number of images drawn.

    Raises:
        ValueError: when ``paths`` is empty or none of them is a readable image.
        OutputError: an output would replace an input or another output, or was not written.
    """
    if not paths:
        raise ValueError("no input image: the inputs name no file")
    plans = image_outputs(paths, output, similarity, labels)
    os.makedirs(output, exist_ok=True)
    names = demo.names
    if labels:
        vocabulary_file = os.path.join(output, "vocabulary.json")
        write_vocabulary_json(vocabulary_file, names, demo.unseen, demo.gamma)
        confirm_written(vocabulary_file)
    drawn = 0
    for path, plan in zip(paths, plans):
        try:
            image = read_image(path)  # (H, W, 3) RGB, stored pixel grid (no EXIF rotation)
        except DatasetError as e:
            print(f"[demo] skipped, not a readable image: {e}")
            continue
        prediction = np.asarray(demo.predict(image))  # (H, W) class indices
        write_png(plan[".png"], demo.draw(image, prediction))
        if labels:
            write_label_png(plan["_labels.png"], prediction, len(names))
            confirm_written(plan["_labels.png"])
        if similarity:
            write_png(plan["_similarity.png"], demo.similarity(image))
        drawn += 1
    if not drawn:
        raise ValueError(f"none of the {len(paths)} inputs is a readable image: {paths[:5]}")
    return drawn
