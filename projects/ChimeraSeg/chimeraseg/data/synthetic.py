"""A small procedurally generated zero-shot dataset in the prepared COCO-Stuff layout.

Layout written under ``<root>/synthetic_zs`` (the same as a prepared COCO-Stuff, so the same
registration, loaders, mapper and evaluator code paths run on it)::

    train2017/<id>.jpg                          RGB images
    val2017/<id>.jpg
    stuffthingmaps_detectron2/train2017/<id>.png  uint8 labels 0..N-1, 255 ignore
    stuffthingmaps_detectron2/val2017/<id>.png
    meta.json                                   class names, split, generation parameters

Each class (``class_tables.SYNTHETIC_CLASSES``) has its own colour and texture; an image is a
background class with rectangles, ellipses and polygons of other classes composited on it, plus
a thin unlabeled (255) outline. The same seed gives byte-identical PNGs and JPEGs (fixed encoder
settings), and generation takes a few seconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from chimeraseg import IGNORE_LABEL
from chimeraseg.data.splits import get_split

DATASET_DIRNAME = "synthetic_zs"
SPLIT_DIRS = {"train": "train2017", "val": "val2017"}
LABEL_DIRNAME = "stuffthingmaps_detectron2"
FORMAT_VERSION = 1
JPEG_QUALITY = 95

Texture = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def _noise(shape: tuple[int, int], rng: np.random.Generator, cell: int) -> np.ndarray:
    """Smooth value noise in [-1, 1], ``(H, W)``, with features about ``cell`` pixels wide."""
    h, w = shape
    coarse = rng.uniform(-1.0, 1.0, size=(h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1.0, 1.0)


def _shade(base: tuple[int, int, int], amount: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float image: ``base`` colour brightened/darkened by ``amount`` (H, W)."""
    return np.asarray(base, np.float32)[None, None, :] + 60.0 * amount[..., None]


# Each texture maps pixel grids yy, xx (H, W) to an (H, W, 3) float RGB image.
_TEXTURES: dict[str, Texture] = {
    "grass": lambda yy, xx, r: _shade(
        (60, 150, 50), 0.5 * np.sin(xx * 1.7 + 3 * _noise(xx.shape, r, 8))
    ),
    "sky": lambda yy, xx, r: _shade(
        (110, 170, 235), 0.6 * yy / yy.max() + 0.1 * _noise(yy.shape, r, 40)
    ),
    "water": lambda yy, xx, r: _shade(
        (30, 90, 170), 0.5 * np.sin(yy * 0.6 + 2 * np.sin(xx * 0.08))
    ),
    "sand": lambda yy, xx, r: _shade((220, 195, 140), 0.25 * r.uniform(-1, 1, yy.shape)),
    "brick wall": lambda yy, xx, r: _shade(
        (170, 60, 40), 1.5 * (((yy % 12) < 2) | (((xx + 12 * ((yy // 12) % 2)) % 24) < 2)) - 0.2
    ),
    "snow": lambda yy, xx, r: _shade((240, 240, 245), 0.1 * _noise(yy.shape, r, 6)),
    "road": lambda yy, xx, r: _shade((70, 70, 75), 0.3 * r.uniform(-1, 1, yy.shape)),
    "tree": lambda yy, xx, r: _shade((25, 85, 30), 0.6 * _noise(yy.shape, r, 5)),
    "rock": lambda yy, xx, r: _shade((128, 120, 110), 0.7 * _noise(yy.shape, r, 14)),
    "wood": lambda yy, xx, r: _shade(
        (140, 90, 45), 0.4 * np.sin(yy * 0.9 + 4 * _noise(yy.shape, r, 30))
    ),
    "carpet": lambda yy, xx, r: _shade((140, 40, 130), 0.4 * ((yy // 4 + xx // 4) % 2) - 0.2),
    "fence": lambda yy, xx, r: _shade((190, 170, 120), 1.2 * ((xx % 10) < 3) - 0.3),
}


def render_class_patch(
    rng: np.random.Generator, image_hw: tuple[int, int], class_name: str
) -> np.ndarray:
    """Draws one class's texture over a whole image.

    Args:
        rng: Generator (the only source of randomness).
        image_hw: ``(H, W)``.
        class_name: A class of ``class_tables.SYNTHETIC_CLASSES``.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    h, w = image_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each
    return np.clip(_TEXTURES[class_name](yy, xx, rng) + 0.5, 0, 255).astype(np.uint8)


def _random_shape_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """``(H, W)`` bool mask of one random rectangle, ellipse or polygon."""
    mask = np.zeros((h, w), np.uint8)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    ry, rx = int(rng.integers(h // 10, h // 3)), int(rng.integers(w // 10, w // 3))
    kind = rng.integers(0, 3)
    if kind == 0:
        cv2.rectangle(mask, (cx - rx, cy - ry), (cx + rx, cy + ry), 1, thickness=-1)
    elif kind == 1:
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, (cx, cy), (rx, ry), angle, 0, 360, 1, thickness=-1)
    else:
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.5, 1.0, n)
        pts = np.stack([cx + rx * radii * np.cos(angles), cy + ry * radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)
    return mask.astype(bool)


def render_sample(
    rng: np.random.Generator, image_hw: tuple[int, int], class_names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Draws one image and its label.

    Args:
        rng: Generator (the only source of randomness).
        image_hw: ``(H, W)``.
        class_names: Classes; each must have a texture.

    Returns:
        ``image`` ``(H, W, 3)`` uint8 RGB and ``label`` ``(H, W)`` uint8 (class ids, 255).
    """
    h, w = image_hw
    num_classes = len(class_names)
    label = np.full((h, w), rng.integers(0, num_classes), dtype=np.uint8)
    outline_mask = None
    for _ in range(int(rng.integers(2, 6))):
        mask = _random_shape_mask(h, w, rng)
        label[mask] = rng.integers(0, num_classes)
        outline_mask = mask
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # (H, W) each
    image = np.zeros((h, w, 3), np.float32)
    for c in np.unique(label):
        region = label == c
        image[region] = _TEXTURES[class_names[c]](yy, xx, rng)[region]
    # A thin unlabeled outline around the last shape, like annotation boundaries.
    edge = cv2.morphologyEx(outline_mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
    label[edge.astype(bool)] = IGNORE_LABEL
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label


def _expected_meta(seed: int, num_train: int, num_val: int, image_hw: tuple[int, int]) -> dict:
    split = get_split("synthetic")
    return {
        "name": DATASET_DIRNAME,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "image_size_hw": list(image_hw),
        "num_images": {"train": num_train, "val": num_val},
        "class_names": list(split.class_names),
        "seen": list(split.seen),
        "unseen": list(split.unseen),
        "ignore_label": IGNORE_LABEL,
        "jpeg_quality": JPEG_QUALITY,
    }


def sample_ids(num_images: int) -> list[str]:
    """COCO-style zero-padded file ids ``000000000000``, ``000000000001``, ..."""
    return [f"{i:012d}" for i in range(num_images)]


def _is_complete(out_dir: str, meta: dict) -> bool:
    meta_file = os.path.join(out_dir, "meta.json")
    if not os.path.isfile(meta_file):
        return False
    with open(meta_file) as f:
        if json.load(f) != meta:
            return False
    for split, n in meta["num_images"].items():
        for i in sample_ids(n):
            for path in _sample_paths(out_dir, split, i):
                if not os.path.isfile(path):
                    return False
    return True


def _sample_paths(out_dir: str, split: str, sample_id: str) -> tuple[str, str]:
    image = os.path.join(out_dir, SPLIT_DIRS[split], sample_id + ".jpg")
    label = os.path.join(out_dir, LABEL_DIRNAME, SPLIT_DIRS[split], sample_id + ".png")
    return image, label


def make_synthetic_dataset(
    root: str,
    seed: int = 0,
    num_train: int = 48,
    num_val: int = 128,
    image_hw: tuple[int, int] = (160, 200),
    overwrite: bool = False,
) -> str:
    """Writes (or reuses) the synthetic dataset under ``<root>/synthetic_zs``.

    Idempotent: if ``meta.json`` records the same parameters and every file exists, nothing is
    written. Otherwise all samples are (re)generated; the same seed gives identical bytes.

    Args:
        root: Datasets root (``$DETECTRON2_DATASETS``).
        seed: Generation seed.
        num_train: Number of training images.
        num_val: Number of validation images.
        image_hw: ``(H, W)`` of every image.
        overwrite: Regenerate even if a complete dataset with these parameters exists.

    Returns:
        The dataset directory ``<root>/synthetic_zs``.
    """
    out_dir = os.path.join(root, DATASET_DIRNAME)
    meta = _expected_meta(seed, num_train, num_val, tuple(image_hw))
    if not overwrite and _is_complete(out_dir, meta):
        return out_dir
    class_names = get_split("synthetic").class_names
    for split_index, (split, n) in enumerate(meta["num_images"].items()):
        os.makedirs(os.path.join(out_dir, SPLIT_DIRS[split]), exist_ok=True)
        os.makedirs(os.path.join(out_dir, LABEL_DIRNAME, SPLIT_DIRS[split]), exist_ok=True)
        for i, sample_id in enumerate(sample_ids(n)):
            rng = np.random.default_rng([seed, split_index, i])
            image, label = render_sample(rng, tuple(image_hw), class_names)
            image_path, label_path = _sample_paths(out_dir, split, sample_id)
            Image.fromarray(image).save(image_path, quality=JPEG_QUALITY, subsampling=0)
            Image.fromarray(label).save(label_path, compress_level=6)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return out_dir
