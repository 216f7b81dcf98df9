"""COCO-Stuff-164k: the 171-class table and the raw ``stuffthingmaps`` -> contiguous id conversion.

Raw ``stuffthingmaps`` PNGs store ``COCO category id - 1``: things use ids 1..90 (ten ids unused:
12, 26, 29, 30, 45, 66, 68, 69, 71, 83), stuff uses ids 92..182, id 91 is unused and id 183
("other") and 255 are unlabeled. The 171 used ids are numbered contiguously in id order, things
(0..79) first, then stuff (80..170), which is the order of detectron2's and Mask2Former's
COCO-Stuff-171 metadata. Every other COCO id maps to the ignore value 255. A raw value that is no
COCO id - 1 at all (183..254) means a corrupt or foreign label file and is an error.
"""

from __future__ import annotations

import numpy as np

from chimeraseg import IGNORE_LABEL
from chimeraseg.data.class_tables import make_palette

# (COCO category id, name, visualisation colour) of the 80 thing classes; colours are detectron2's.
_COCO_THINGS: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "person", (220, 20, 60)), (2, "bicycle", (119, 11, 32)), (3, "car", (0, 0, 142)),
    (4, "motorcycle", (0, 0, 230)), (5, "airplane", (106, 0, 228)), (6, "bus", (0, 60, 100)),
    (7, "train", (0, 80, 100)), (8, "truck", (0, 0, 70)), (9, "boat", (0, 0, 192)),
    (10, "traffic light", (250, 170, 30)), (11, "fire hydrant", (100, 170, 30)),
    (13, "stop sign", (220, 220, 0)), (14, "parking meter", (175, 116, 175)),
    (15, "bench", (250, 0, 30)), (16, "bird", (165, 42, 42)), (17, "cat", (255, 77, 255)),
    (18, "dog", (0, 226, 252)), (19, "horse", (182, 182, 255)), (20, "sheep", (0, 82, 0)),
    (21, "cow", (120, 166, 157)), (22, "elephant", (110, 76, 0)), (23, "bear", (174, 57, 255)),
    (24, "zebra", (199, 100, 0)), (25, "giraffe", (72, 0, 118)), (27, "backpack", (255, 179, 240)),
    (28, "umbrella", (0, 125, 92)), (31, "handbag", (209, 0, 151)), (32, "tie", (188, 208, 182)),
    (33, "suitcase", (0, 220, 176)), (34, "frisbee", (255, 99, 164)), (35, "skis", (92, 0, 73)),
    (36, "snowboard", (133, 129, 255)), (37, "sports ball", (78, 180, 255)),
    (38, "kite", (0, 228, 0)), (39, "baseball bat", (174, 255, 243)),
    (40, "baseball glove", (45, 89, 255)), (41, "skateboard", (134, 134, 103)),
    (42, "surfboard", (145, 148, 174)), (43, "tennis racket", (255, 208, 186)),
    (44, "bottle", (197, 226, 255)), (46, "wine glass", (171, 134, 1)), (47, "cup", (109, 63, 54)),
    (48, "fork", (207, 138, 255)), (49, "knife", (151, 0, 95)), (50, "spoon", (9, 80, 61)),
    (51, "bowl", (84, 105, 51)), (52, "banana", (74, 65, 105)), (53, "apple", (166, 196, 102)),
    (54, "sandwich", (208, 195, 210)), (55, "orange", (255, 109, 65)),
    (56, "broccoli", (0, 143, 149)), (57, "carrot", (179, 0, 194)), (58, "hot dog", (209, 99, 106)),
    (59, "pizza", (5, 121, 0)), (60, "donut", (227, 255, 205)), (61, "cake", (147, 186, 208)),
    (62, "chair", (153, 69, 1)), (63, "couch", (3, 95, 161)), (64, "potted plant", (163, 255, 0)),
    (65, "bed", (119, 0, 170)), (67, "dining table", (0, 182, 199)), (70, "toilet", (0, 165, 120)),
    (72, "tv", (183, 130, 88)), (73, "laptop", (95, 32, 0)), (74, "mouse", (130, 114, 135)),
    (75, "remote", (110, 129, 133)), (76, "keyboard", (166, 74, 118)),
    (77, "cell phone", (219, 142, 185)), (78, "microwave", (79, 210, 114)),
    (79, "oven", (178, 90, 62)), (80, "toaster", (65, 70, 15)), (81, "sink", (127, 167, 115)),
    (82, "refrigerator", (59, 105, 106)), (84, "book", (142, 108, 45)),
    (85, "clock", (196, 172, 0)), (86, "vase", (95, 54, 80)), (87, "scissors", (128, 76, 255)),
    (88, "teddy bear", (201, 57, 1)), (89, "hair drier", (246, 0, 122)),
    (90, "toothbrush", (191, 162, 208)),
)  # fmt: skip

# The 91 stuff classes, COCO ids 92..182 in this order.
_COCO_STUFF_FIRST_ID = 92
_COCO_STUFF_NAMES: tuple[str, ...] = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip

COCO_STUFF_171_CLASSES: tuple[str, ...] = tuple(n for _, n, _ in _COCO_THINGS) + _COCO_STUFF_NAMES
COCO_STUFF_171_COCO_IDS: tuple[int, ...] = tuple(i for i, _, _ in _COCO_THINGS) + tuple(
    range(_COCO_STUFF_FIRST_ID, _COCO_STUFF_FIRST_ID + len(_COCO_STUFF_NAMES))
)
COCO_STUFF_171_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    c for _, _, c in _COCO_THINGS
) + make_palette(len(_COCO_STUFF_NAMES), seed=171)


def raw_to_contiguous_lut() -> np.ndarray:
    """The lookup table from raw ``stuffthingmaps`` values to contiguous COCO-Stuff-171 ids.

    Returns:
        ``(256,)`` uint8 array: ``lut[coco_id - 1] = contiguous index``; every other value
        (unused ids, 182 "other", 255 unlabeled) maps to 255.
    """
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for contiguous, coco_id in enumerate(COCO_STUFF_171_COCO_IDS):
        lut[coco_id - 1] = contiguous
    return lut


RAW_TO_CONTIGUOUS_LUT: np.ndarray = raw_to_contiguous_lut()
RAW_TO_CONTIGUOUS_LUT.setflags(write=False)

# Raw values a stuffthingmap may hold: COCO id - 1 for ids 1..183 (183 = "other") and 255.
RAW_VALID: np.ndarray = np.zeros(256, dtype=bool)
RAW_VALID[: _COCO_STUFF_FIRST_ID + len(_COCO_STUFF_NAMES)] = True
RAW_VALID[IGNORE_LABEL] = True
RAW_VALID.setflags(write=False)
RAW_VALID_DESCRIPTION = "a COCO category id - 1 (0..182) or 255"
