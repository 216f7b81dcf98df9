#!/usr/bin/env python
"""Converts ADE20K SceneParsing (150 classes) labels: raw k -> k - 1, raw 0 ("other") -> 255.

Input: ``$DETECTRON2_DATASETS/ADEChallengeData2016/{images,annotations}/{training,validation}``
(from ``ADEChallengeData2016.zip``). Output: ``ADEChallengeData2016/annotations_detectron2/
{training,validation}/*.png``. Idempotent and resumable; verifies the official counts. A raw
value that is no class (151..255) stops the run naming the file and the value (``--skip-bad``:
the sample is skipped and counted).
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

EXPECTED_COUNTS = {"training": 20_210, "validation": 2_000}
NUM_CLASSES = 150


def ade20k_lut() -> np.ndarray:
    """``(256,)`` uint8 table: 0 -> 255, k -> k - 1 for k in 1..150, anything else -> 255."""
    lut = np.full(256, 255, dtype=np.uint8)
    lut[1 : NUM_CLASSES + 1] = np.arange(NUM_CLASSES, dtype=np.uint8)
    return lut


def ade20k_valid_raw() -> np.ndarray:
    """``(256,)`` bool: the raw values ADE20K-150 defines (0 "other", 1..150 classes)."""
    valid = np.zeros(256, dtype=bool)
    valid[: NUM_CLASSES + 1] = True
    return valid


VALID_RAW_DESCRIPTION = 'an ADE20K-150 value (0 "other", 1..150 classes)'


def build_jobs(ade_dir: str, split: str, check_images: bool) -> list[LabelJob]:
    """One job per ``annotations/<split>/*.png``."""
    raw_dir = os.path.join(ade_dir, "annotations", split)
    if not os.path.isdir(raw_dir):
        raise FileNotFoundError(f"raw ADE20K label directory not found: {raw_dir}")
    lut, valid, jobs = ade20k_lut(), ade20k_valid_raw(), []
    for name in sorted(f for f in os.listdir(raw_dir) if f.endswith(".png")):
        image = os.path.join(ade_dir, "images", split, name[:-4] + ".jpg") if check_images else None
        dst = os.path.join(ade_dir, "annotations_detectron2", split, name)
        src = os.path.join(raw_dir, name)
        jobs.append(LabelJob(src, dst, lut, NUM_CLASSES, image, valid, VALID_RAW_DESCRIPTION))
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns 0 if every split has its official count, else 1."""
    parser = prepare_argument_parser(__doc__.split("\n")[0], "datasets/prepare_ade20k_sem_seg.py")
    parser.add_argument(
        "--splits", nargs="+", default=list(EXPECTED_COUNTS), choices=list(EXPECTED_COUNTS),
        help="splits to convert (default: all)",
    )  # fmt: skip
    args = parser.parse_args(argv)  # fmt: skip
    ade_dir, status = os.path.join(args.datasets_root, "ADEChallengeData2016"), 0
    for split in args.splits:
        jobs = build_jobs(ade_dir, split, check_images=not args.no_image_check)
        report = run_label_jobs(jobs, args.workers, args.skip_bad, desc=f"ade20k {split}")
        out_dir = os.path.join(ade_dir, "annotations_detectron2", split)
        error = verify_count(out_dir, EXPECTED_COUNTS[split])
        status |= print_summary(f"ade20k {split}", report, [error] if error else [])
    return status


if __name__ == "__main__":
    sys.exit(main())
