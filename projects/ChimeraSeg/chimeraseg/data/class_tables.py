"""Class-name tables of the zero-shot benchmarks (besides COCO-Stuff, see ``coco_stuff.py``).

Every table lists names in contiguous label order: the name at position ``i`` is the class whose
prepared label value is ``i``. Names are the datasets' own (no prompt engineering here;
``chimeraseg.clip.names`` holds the spellings COCO-Stuff and PASCAL declare for CLIP prompts).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

# The two large open-vocabulary tables are data files next to this module.
_CLASS_NAMES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "class_names")

# PASCAL Context, 59 most frequent classes (label value = position; background -> 255).
PASCAL_CONTEXT_59_CLASSES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip

# PASCAL VOC 2012 object classes without background (raw PNG value k -> label k - 1; 0 -> 255).
PASCAL_VOC_20_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

# ADE20K SceneParsing 150 classes (raw PNG value k -> label k - 1; 0 "other" -> 255), with the
# first synonym of the official objectInfo150 names.
ADE20K_150_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)  # fmt: skip

# The procedurally generated dataset of ``chimeraseg.data.synthetic``: real-word names so that a
# (real) CLIP text encoder gives meaningful embeddings, one colour + texture per class.
SYNTHETIC_CLASSES: tuple[str, ...] = (
    "grass", "sky", "water", "sand", "brick wall", "snow", "road", "tree", "rock", "wood",
    "carpet", "fence",
)  # fmt: skip
SYNTHETIC_UNSEEN: tuple[int, ...] = (2, 7, 10)  # water, tree, carpet


def _table_lines(filename: str) -> list[str]:
    """Non-comment lines of a file in ``class_names/``."""
    with open(os.path.join(_CLASS_NAMES_DIR, filename), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def pascal_context_459_classes() -> tuple[str, ...]:
    """The 459 classes of the full PASCAL Context labels (label ``i`` = ``labels.txt`` id i+1)."""
    names = tuple(_table_lines("pascal_context_459.txt"))
    if len(names) != 459:
        raise ValueError(f"class_names/pascal_context_459.txt lists {len(names)} names, not 459")
    return names


@lru_cache(maxsize=1)
def ade20k_847_table() -> tuple[tuple[int, str], ...]:
    """ADE20K-847: per label value, ``(ADE20K object class index, name)``.

    The object class index is what an ADE20K_2021_17_01 ``*_seg.png`` encodes as
    ``R // 10 * 256 + G``; names list synonyms separated by commas.
    """
    rows = []
    for expected, line in enumerate(_table_lines("ade20k_847.tsv")):
        label, ade_index, name = line.split("\t")
        if int(label) != expected:
            raise ValueError(f"class_names/ade20k_847.tsv: label {label} on row {expected}")
        rows.append((int(ade_index), name))
    if len(rows) != 847:
        raise ValueError(f"class_names/ade20k_847.tsv lists {len(rows)} classes, not 847")
    return tuple(rows)


def make_palette(num_colors: int, seed: int) -> tuple[tuple[int, int, int], ...]:
    """Deterministic, reasonably distinct RGB visualisation colours.

    Args:
        num_colors: Number of colours.
        seed: Seed of the generator (each table uses its own fixed seed).

    Returns:
        ``num_colors`` RGB triples in ``[0, 255]``.
    """
    rng = np.random.default_rng(seed)
    colors = rng.integers(16, 240, size=(num_colors, 3))  # (num_colors, 3)
    return tuple((int(r), int(g), int(b)) for r, g, b in colors)
