#!/usr/bin/env python
"""Converts COCO-Stuff-164k raw ``stuffthingmaps`` to contiguous 171-class labels.

Input  (see datasets/README.md): ``$DETECTRON2_DATASETS/coco/{train2017,val2017}/*.jpg`` and
``coco/stuffthingmaps/{train2017,val2017}/*.png`` (values = COCO id - 1, 255 unlabeled).
Output: ``coco/stuffthingmaps_detectron2/{train2017,val2017}/*.png`` with values 0..170 and 255.
A raw value that is no COCO id - 1 (183..254) stops the run naming the file and the value
(``--skip-bad``: the sample is skipped and counted).

Idempotent and resumable (existing outputs are kept); verifies the official counts at the end.
"""

from __future__ import annotations

import argparse
import os
import sys

from chimeraseg.data.coco_stuff import RAW_TO_CONTIGUOUS_LUT, RAW_VALID, RAW_VALID_DESCRIPTION
from chimeraseg.data.conversion import (
    LabelJob,
    prepare_argument_parser,
    print_summary,
    run_label_jobs,
    verify_count,
)

EXPECTED_COUNTS = {"train2017": 118_287, "val2017": 5_000}
NUM_CLASSES = 171


def build_jobs(coco_dir: str, split: str, check_images: bool) -> list[LabelJob]:
    """One job per raw ``stuffthingmaps/<split>/*.png``."""
    raw_dir = os.path.join(coco_dir, "stuffthingmaps", split)
    if not os.path.isdir(raw_dir):
        raise FileNotFoundError(f"raw COCO-Stuff label directory not found: {raw_dir}")
    out_dir = os.path.join(coco_dir, "stuffthingmaps_detectron2", split)
    jobs = []
    for name in sorted(f for f in os.listdir(raw_dir) if f.endswith(".png")):
        image = os.path.join(coco_dir, split, name[:-4] + ".jpg") if check_images else None
        src, dst = os.path.join(raw_dir, name), os.path.join(out_dir, name)
        lut = RAW_TO_CONTIGUOUS_LUT
        job = LabelJob(src, dst, lut, NUM_CLASSES, image, RAW_VALID, RAW_VALID_DESCRIPTION)
        jobs.append(job)
    return jobs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = prepare_argument_parser(
        __doc__.split("\n")[0], "datasets/prepare_coco_stuff_164k_sem_seg.py"
    )
    parser.add_argument(
        "--splits", nargs="+", default=list(EXPECTED_COUNTS), choices=list(EXPECTED_COUNTS),
        help="splits to convert (default: all)",
    )  # fmt: skip
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns 0 if every split has its official count, else 1."""
    args = parse_args(argv)
    coco_dir = os.path.join(args.datasets_root, "coco")
    status = 0
    for split in args.splits:
        jobs = build_jobs(coco_dir, split, check_images=not args.no_image_check)
        report = run_label_jobs(jobs, args.workers, args.skip_bad, desc=f"coco {split}")
        out_dir = os.path.join(coco_dir, "stuffthingmaps_detectron2", split)
        error = verify_count(out_dir, EXPECTED_COUNTS[split])
        status |= print_summary(f"coco_stuff {split}", report, [error] if error else [])
    return status


if __name__ == "__main__":
    sys.exit(main())
