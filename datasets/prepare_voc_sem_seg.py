#!/usr/bin/env python
"""Converts PASCAL VOC 2012 segmentation labels to the 20-class zero-shot labels.

Raw value k in 1..20 -> k - 1, background 0 -> 255, boundary 255 -> 255 (VOC-20 zero-shot
protocol: background is not a class). Input: ``$DETECTRON2_DATASETS/VOCdevkit/VOC2012/``
``{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}`` (from
``VOCtrainval_11-May-2012.tar``); with ``--aug``, the training split is SBD-augmented
``SegmentationClassAug`` + ``ImageSets/Segmentation/aug.txt`` (10,582 images). Output:
``VOC2012/annotations_detectron2/{train,val}/<id>.png``. Idempotent; verifies counts. A raw
value that VOC does not define (21..254) stops the run naming the file and the value
(``--skip-bad``: the sample is skipped and counted); list ids must be plain file names.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from chimeraseg.data.conversion import (
    LabelJob,
    prepare_argument_parser,
    print_summary,
    run_label_jobs,
    verify_count,
)
from chimeraseg.data.io import read_id_list

NUM_CLASSES = 20
EXPECTED_COUNTS = {"train": 1_464, "val": 1_449}
EXPECTED_TRAIN_AUG = 10_582


def voc_lut() -> np.ndarray:
    """``(256,)`` uint8 table: 0 -> 255, k -> k - 1 for k in 1..20, anything else -> 255."""
    lut = np.full(256, 255, dtype=np.uint8)
    lut[1 : NUM_CLASSES + 1] = np.arange(NUM_CLASSES, dtype=np.uint8)
    return lut


def voc_valid_raw() -> np.ndarray:
    """``(256,)`` bool: the raw values VOC defines (0 background, 1..20 classes, 255 boundary)."""
    valid = np.zeros(256, dtype=bool)
    valid[: NUM_CLASSES + 1] = True
    valid[255] = True
    return valid


VALID_RAW_DESCRIPTION = "a VOC value (0 background, 1..20 classes, 255 boundary)"


def build_jobs(
    voc_dir: str, split: str, list_file: str, label_dir: str, check_images: bool
) -> list[LabelJob]:
    """One job per id of ``list_file`` (labels read from ``label_dir``)."""
    lut, valid, jobs = voc_lut(), voc_valid_raw(), []
    for image_id in read_id_list(list_file):
        image = os.path.join(voc_dir, "JPEGImages", image_id + ".jpg") if check_images else None
        src = os.path.join(label_dir, image_id + ".png")
        dst = os.path.join(voc_dir, "annotations_detectron2", split, image_id + ".png")
        jobs.append(LabelJob(src, dst, lut, NUM_CLASSES, image, valid, VALID_RAW_DESCRIPTION))
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns 0 if every split has its official count, else 1."""
    parser = prepare_argument_parser(__doc__.split("\n")[0], "datasets/prepare_voc_sem_seg.py")
    parser.add_argument(
        "--aug",
        action="store_true",
        help="train on SegmentationClassAug + ImageSets/Segmentation/aug.txt",
    )
    args = parser.parse_args(argv)  # fmt: skip
    voc_dir = os.path.join(args.datasets_root, "VOCdevkit", "VOC2012")
    sets_dir = os.path.join(voc_dir, "ImageSets", "Segmentation")
    splits = {
        "train": ("aug.txt", "SegmentationClassAug")
        if args.aug
        else ("train.txt", "SegmentationClass"),
        "val": ("val.txt", "SegmentationClass"),
    }
    expected = dict(EXPECTED_COUNTS, **({"train": EXPECTED_TRAIN_AUG} if args.aug else {}))
    status = 0
    for split, (list_name, label_dirname) in splits.items():
        list_file = os.path.join(sets_dir, list_name)
        label_dir = os.path.join(voc_dir, label_dirname)
        jobs = build_jobs(voc_dir, split, list_file, label_dir, not args.no_image_check)
        report = run_label_jobs(jobs, args.workers, args.skip_bad, desc=f"voc {split}")
        error = verify_count(
            os.path.join(voc_dir, "annotations_detectron2", split), expected[split]
        )
        status |= print_summary(f"voc {split}", report, [error] if error else [])
    return status


if __name__ == "__main__":
    sys.exit(main())
