#!/usr/bin/env python
"""Converts PASCAL Context full (459-class ``.mat``) labels for cross-dataset evaluation (PC-459).

Inputs under ``$DETECTRON2_DATASETS/VOCdevkit/VOC2010`` (see datasets/README.md): ``JPEGImages/``
(VOC2010), ``trainval/<id>.mat`` (``LabelMap``) and ``labels.txt`` from the PASCAL Context
``trainval.tar.gz``, and the validation list ``pascalcontext_val.txt`` (CAT-Seg's file; else
``ImageSets/SegmentationContext/val.txt``, the same 5,104 ids). Output, the CAT-Seg / SAN layout:
``annotations_detectron2/pc459_val/<id>.tif``, 16-bit, label = ``labels.txt`` id - 1 (0...458),
0 (unlabeled) -> 65535. ``labels.txt`` is checked against the class table the registration uses
(``chimeraseg/data/class_names/pascal_context_459.txt``), so label values and names agree.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from chimeraseg import IGNORE_LABEL_16BIT
from chimeraseg.data.class_tables import pascal_context_459_classes
from chimeraseg.data.conversion import (
    LabelJob,
    prepare_argument_parser,
    print_summary,
    read_label_names,
    run_label_jobs,
    verify_count,
)
from chimeraseg.data.io import read_id_list

EXPECTED_COUNT = 5_104
VAL_LISTS = ("pascalcontext_val.txt", os.path.join("ImageSets", "SegmentationContext", "val.txt"))
OUTPUT_DIRNAME = os.path.join("annotations_detectron2", "pc459_val")


def _squashed(name: str) -> str:
    """``labels.txt`` writes multi-word names without spaces ("airconditioner")."""
    return name.replace(" ", "")


def context459_lut(label_names: dict[str, int], path: str = "labels.txt") -> np.ndarray:
    """``(460,)`` uint16 table: raw id k in 1..459 -> k - 1, 0 (unlabeled) -> 65535.

    Raises:
        ValueError: Naming ``path`` and the ids whose names differ from the shipped table.
    """
    table = pascal_context_459_classes()
    by_id = {i: n for n, i in label_names.items()}
    wrong = [
        (i, by_id.get(i), table[i - 1])
        for i in range(1, len(table) + 1)
        if _squashed(by_id.get(i, "")) != _squashed(table[i - 1])
    ]
    if wrong or len(by_id) != len(table):
        shown = ", ".join(f"id {i}: {got!r} (expected {want!r})" for i, got, want in wrong[:5])
        raise ValueError(f"{path} is not the 459-class PASCAL Context label list: {shown}")
    lut = np.arange(-1, len(table), dtype=np.int64)
    lut[0] = IGNORE_LABEL_16BIT
    return lut.astype(np.uint16)


def val_list(voc_dir: str) -> str:
    """The first existing validation list of :data:`VAL_LISTS`."""
    for name in VAL_LISTS:
        path = os.path.join(voc_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no PASCAL Context validation list in {voc_dir}: tried {VAL_LISTS}")


def build_jobs(voc_dir: str, lut: np.ndarray, check_images: bool) -> list[LabelJob]:
    """One job per id of the validation list."""
    jobs = []
    for image_id in read_id_list(val_list(voc_dir)):
        image = os.path.join(voc_dir, "JPEGImages", image_id + ".jpg") if check_images else None
        src = os.path.join(voc_dir, "trainval", image_id + ".mat")
        dst = os.path.join(voc_dir, OUTPUT_DIRNAME, image_id + ".tif")
        jobs.append(LabelJob(src, dst, lut, len(lut) - 1, image, ignore_label=IGNORE_LABEL_16BIT))
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns 0 if the official count is reached, else 1."""
    parser = prepare_argument_parser(
        __doc__.split("\n")[0], "datasets/prepare_pascal_context_459.py"
    )
    args = parser.parse_args(argv)
    voc_dir = os.path.join(args.datasets_root, "VOCdevkit", "VOC2010")
    labels_txt = os.path.join(voc_dir, "labels.txt")
    lut = context459_lut(read_label_names(labels_txt), labels_txt)
    jobs = build_jobs(voc_dir, lut, check_images=not args.no_image_check)
    report = run_label_jobs(jobs, args.workers, args.skip_bad, desc="pc459 val")
    error = verify_count(os.path.join(voc_dir, OUTPUT_DIRNAME), EXPECTED_COUNT, ext=".tif")
    return print_summary("pascal_context_459 val", report, [error] if error else [])


if __name__ == "__main__":
    sys.exit(main())
