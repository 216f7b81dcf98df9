#!/usr/bin/env python
"""Converts ADE20K full (ADE20K_2021_17_01) validation images to ADE20K-847 for cross-dataset
evaluation, in the layout CAT-Seg and SAN use.

Input: ``$DETECTRON2_DATASETS/ADE20K_2021_17_01/images/ADE/validation/**/ADE_val_*.jpg`` with
their ``*_seg.png`` (the official download; its ``index_ade20k.pkl`` is not needed, so no pickle
is loaded). Labels: the 847 benchmark classes -> 0...846, every other object class -> 65535;
images with a short side above 512 are resized to 512 (``chimeraseg/data/ade20k_847.py``).
Output: ``ADE20K_2021_17_01/images_detectron2/validation/<name>.jpg`` and
``annotations_detectron2/validation/<name>.tif`` (16-bit). Idempotent and resumable (atomic
writes); checks the official count.
"""

from __future__ import annotations

import os
import sys

from chimeraseg.data.ade20k_847 import ADE847Job, convert_ade847
from chimeraseg.data.conversion import (
    prepare_argument_parser,
    print_summary,
    run_label_jobs,
    verify_count,
)

EXPECTED_COUNT = 2_000
DATASET_DIRNAME = "ADE20K_2021_17_01"


def build_jobs(ade_dir: str, skip_bad: bool) -> list[ADE847Job]:
    """One job per ``ADE_val_*.jpg`` under ``images/ADE/validation`` (any depth)."""
    source = os.path.join(ade_dir, "images", "ADE", "validation")
    if not os.path.isdir(source):
        raise FileNotFoundError(f"ADE20K full validation images not found: {source}")
    jobs = []
    for folder, _, files in sorted(os.walk(source)):
        for name in sorted(f for f in files if f.startswith("ADE_val_") and f.endswith(".jpg")):
            image_out = os.path.join(ade_dir, "images_detectron2", "validation", name)
            label_out = os.path.join(ade_dir, "annotations_detectron2", "validation", name[:-4])
            jobs.append(
                ADE847Job(os.path.join(folder, name), image_out, label_out + ".tif", skip_bad)
            )
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns 0 if the official count is reached, else 1."""
    parser = prepare_argument_parser(
        __doc__.split("\n")[0], "datasets/prepare_ade20k_847.py", image_check=False
    )
    args = parser.parse_args(argv)
    ade_dir = os.path.join(args.datasets_root, DATASET_DIRNAME)
    jobs = build_jobs(ade_dir, args.skip_bad)
    report = run_label_jobs(jobs, args.workers, args.skip_bad, "ade847", run_one=convert_ade847)
    out_dir = os.path.join(ade_dir, "annotations_detectron2", "validation")
    error = verify_count(out_dir, EXPECTED_COUNT, ext=".tif")
    return print_summary("ade20k_847 validation", report, [error] if error else [])


if __name__ == "__main__":
    sys.exit(main())
