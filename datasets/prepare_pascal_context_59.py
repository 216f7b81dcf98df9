#!/usr/bin/env python
"""Converts PASCAL Context full (459-class ``.mat``) labels to the 59-class labels.

Inputs under ``$DETECTRON2_DATASETS/VOCdevkit/VOC2010`` (see datasets/README.md):
``JPEGImages/`` (VOC2010), ``trainval/<id>.mat`` (``LabelMap``, 459-class ids) and ``labels.txt``
(``"<id>: <name>"``) from the PASCAL Context ``trainval.tar.gz``, and the split lists.
Each of the 59 classes is found by name in ``labels.txt``; every other id (including 0,
unlabeled) becomes 255. Output: ``annotations_detectron2/pc59/{train,val}/<id>.png``.

Split lists (``--split-source``): ``context`` (default) reads
``ImageSets/SegmentationContext/{train,val}.txt``, the 4,996 / 5,104 split of the Detail API
used by mmsegmentation and the zero-shot papers; ``main`` reads VOC2010's
``ImageSets/Main/{train,val}.txt`` (4,998 / 5,105 images, the original PASCAL Context split).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from chimeraseg.data.class_tables import PASCAL_CONTEXT_59_CLASSES
from chimeraseg.data.conversion import (
    LabelJob,
    prepare_argument_parser,
    print_summary,
    read_label_names,
    run_label_jobs,
    verify_count,
)
from chimeraseg.data.io import read_id_list

EXPECTED_COUNTS = {
    "context": {"train": 4_996, "val": 5_104},
    "main": {"train": 4_998, "val": 5_105},
}
LIST_DIRS = {"context": "SegmentationContext", "main": "Main"}


def context59_lut(label_names: dict[str, int]) -> np.ndarray:
    """``(max_id + 1,)`` uint8 table: 459-class id of the i-th 59-class name -> i, else 255."""
    missing = [n for n in PASCAL_CONTEXT_59_CLASSES if n not in label_names]
    if missing:
        raise ValueError(f"labels.txt lacks the 59-class names {missing}")
    lut = np.full(max(label_names.values()) + 1, 255, dtype=np.uint8)
    for index, name in enumerate(PASCAL_CONTEXT_59_CLASSES):
        lut[label_names[name]] = index
    return lut


def build_jobs(
    voc_dir: str, split: str, split_source: str, lut: np.ndarray, check_images: bool
) -> list[LabelJob]:
    """One job per id of the split list."""
    list_file = os.path.join(voc_dir, "ImageSets", LIST_DIRS[split_source], split + ".txt")
    jobs = []
    for image_id in read_id_list(list_file):
        image = os.path.join(voc_dir, "JPEGImages", image_id + ".jpg") if check_images else None
        src = os.path.join(voc_dir, "trainval", image_id + ".mat")
        dst = os.path.join(voc_dir, "annotations_detectron2", "pc59", split, image_id + ".png")
        jobs.append(LabelJob(src, dst, lut, len(PASCAL_CONTEXT_59_CLASSES), image))
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns 0 if every split has its official count, else 1."""
    parser = prepare_argument_parser(
        __doc__.split("\n")[0], "datasets/prepare_pascal_context_59.py"
    )
    parser.add_argument(
        "--split-source", choices=list(LIST_DIRS), default="context",
        help="which train/val lists to use (default: %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)  # fmt: skip
    voc_dir = os.path.join(args.datasets_root, "VOCdevkit", "VOC2010")
    lut = context59_lut(read_label_names(os.path.join(voc_dir, "labels.txt")))
    status = 0
    for split, expected in EXPECTED_COUNTS[args.split_source].items():
        jobs = build_jobs(voc_dir, split, args.split_source, lut, not args.no_image_check)
        report = run_label_jobs(jobs, args.workers, args.skip_bad, desc=f"pc59 {split}")
        error = verify_count(
            os.path.join(voc_dir, "annotations_detectron2", "pc59", split), expected
        )
        status |= print_summary(f"pascal_context_59 {split}", report, [error] if error else [])
    return status


if __name__ == "__main__":
    sys.exit(main())
