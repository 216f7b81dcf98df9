#!/usr/bin/env python
"""Converts ADE20K full (ADE20K_2021_17_01) validation images to ADE20K-847 for cross-dataset
evaluation, in the layout CAT-Seg and SAN use.

Input: ``$DETECTRON2_DATASETS/ADE20K_2021_17_01/images/ADE/validation/**/ADE_val_*.jpg`` with
their ``*_seg.png`` (the official download; its ``index_ade20k.pkl`` is not needed, so no pickle
is loaded). A ``_seg.png`` encodes the ADE20K object class index of a pixel as
``R // 10 * 256 + G``; the 847 benchmark classes (``chimeraseg/data/class_names/ade20k_847.tsv``)
map to labels 0...846, every other index to 65535 (ignore). As in CAT-Seg, an image whose short
side exceeds 512 is resized to a 512 short side (bilinear; labels nearest), saved with PIL's
default JPEG quality. Output: ``ADE20K_2021_17_01/images_detectron2/validation/<name>.jpg`` and
``annotations_detectron2/validation/<name>.tif`` (16-bit). Idempotent, atomic, checks the count.
"""

from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image
from tqdm import tqdm

from chimeraseg.data.class_tables import ade20k_847_table
from chimeraseg.data.conversion import ConversionReport, print_summary, verify_count
from chimeraseg.data.io import DatasetError, read_image

EXPECTED_COUNT = 2_000
IGNORE_16BIT = 65535
MAX_SHORT_SIDE = 512
DATASET_DIRNAME = "ADE20K_2021_17_01"


def ade847_lut() -> np.ndarray:
    """``(max index + 1,)`` uint16 table: ADE20K object class index -> label, else 65535."""
    table = ade20k_847_table()
    lut = np.full(max(index for index, _ in table) + 1, IGNORE_16BIT, dtype=np.uint16)
    for label, (index, _) in enumerate(table):
        lut[index] = label
    return lut


def decode_seg(path: str) -> np.ndarray:
    """``(H, W)`` int64 ADE20K object class indices of a ``*_seg.png`` (``R // 10 * 256 + G``)."""
    if not os.path.isfile(path):
        raise DatasetError(f"ADE20K segmentation file not found: {path}")
    seg = read_image(path).astype(np.int64)  # (H, W, 3) RGB
    return seg[..., 0] // 10 * 256 + seg[..., 1]


def to_labels(indices: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Object class indices -> ``(H, W)`` uint16 labels (indices beyond the table -> 65535)."""
    inside = indices < len(lut)
    return np.where(inside, lut[np.where(inside, indices, 0)], IGNORE_16BIT).astype(np.uint16)


def _short_side_size(h: int, w: int) -> tuple[int, int] | None:
    """``(new_h, new_w)`` with a short side of 512, or None when it is 512 or less already."""
    if min(h, w) <= MAX_SHORT_SIDE:
        return None
    if h <= w:
        return MAX_SHORT_SIDE, round(w * MAX_SHORT_SIDE / h)
    return round(h * MAX_SHORT_SIDE / w), MAX_SHORT_SIDE


def _save(array: np.ndarray, path: str, image_format: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    Image.fromarray(array).save(tmp, format=image_format)
    os.replace(tmp, path)


def convert_one(job: tuple[str, str, str, bool]) -> tuple[str, str]:
    """Converts one image and its ``_seg.png``; returns ``(status, message)``."""
    image_path, image_out, label_out, skip_bad = job
    if os.path.isfile(image_out) and os.path.isfile(label_out):
        return "existing", ""
    try:
        image = read_image(image_path)  # (H, W, 3)
        labels = to_labels(decode_seg(image_path[: -len(".jpg")] + "_seg.png"), ade847_lut())
        if labels.shape != image.shape[:2]:
            raise DatasetError(
                f"{image_path}: segmentation size {labels.shape} differs from the image's "
                f"{image.shape[:2]}"
            )
    except DatasetError as e:
        if not skip_bad:
            raise
        return "bad", str(e)
    size = _short_side_size(*labels.shape)
    if size is not None:
        image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))
        labels = np.asarray(Image.fromarray(labels).resize(size[::-1], Image.NEAREST))
    _save(labels, label_out, "TIFF")
    _save(image, image_out, "JPEG")
    return "converted", ""


def build_jobs(ade_dir: str, skip_bad: bool) -> list[tuple[str, str, str, bool]]:
    """One job per ``ADE_val_*.jpg`` under ``images/ADE/validation`` (any depth)."""
    source = os.path.join(ade_dir, "images", "ADE", "validation")
    if not os.path.isdir(source):
        raise FileNotFoundError(f"ADE20K full validation images not found: {source}")
    jobs = []
    for folder, _, files in sorted(os.walk(source)):
        for name in sorted(f for f in files if f.startswith("ADE_val_") and f.endswith(".jpg")):
            image_out = os.path.join(ade_dir, "images_detectron2", "validation", name)
            label_out = os.path.join(ade_dir, "annotations_detectron2", "validation", name[:-4])
            jobs.append((os.path.join(folder, name), image_out, label_out + ".tif", skip_bad))
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Runs the conversion; returns 0 if the official count is reached, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad samples")
    args = parser.parse_args(argv)
    ade_dir = os.path.join(args.root, DATASET_DIRNAME)
    jobs = build_jobs(ade_dir, args.skip_bad)
    report = ConversionReport()
    pool = Pool(args.workers) if args.workers > 1 else None
    results = pool.imap(convert_one, jobs, chunksize=8) if pool else map(convert_one, jobs)
    try:
        for job, (status, message) in zip(jobs, tqdm(results, total=len(jobs), desc="ade847")):
            if status == "bad":
                report.bad.append((job[0], message))
            elif status == "existing":
                report.existing += 1
            else:
                report.converted += 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    out_dir = os.path.join(ade_dir, "annotations_detectron2", "validation")
    error = verify_count(out_dir, EXPECTED_COUNT, ext=".tif")
    return print_summary("ade20k_847 validation", report, [error] if error else [])


if __name__ == "__main__":
    sys.exit(main())
