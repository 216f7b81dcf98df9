"""Label conversion engine shared by the ``datasets/prepare_*.py`` scripts.

A conversion is a list of :class:`LabelJob` (raw label file -> prepared PNG, via a lookup table).
:func:`run_label_jobs` runs them in a process pool with a progress bar, skips outputs that already
exist (so an interrupted run resumes), writes each output atomically (``*.tmp`` then rename), and
either stops at the first bad sample with an error naming the file or, with ``skip_bad``, skips
and counts bad samples.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pool
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from chimeraseg.data.io import (
    DatasetError,
    check_label_values,
    image_size,
    output_damage,
    read_image,
)
from chimeraseg.utils.tool_parser import add_datasets_root, tool_parser


@dataclass(frozen=True)
class LabelJob:
    """One label to convert.

    Attributes:
        src: Raw label file: a single-channel PNG, or a ``.mat`` file with a ``LabelMap`` array.
        dst: Output PNG path.
        lut: ``(K,)`` uint8 lookup table, ``prepared = lut[raw]``; raw values ``>= K`` are bad.
        num_classes: Number of classes of the prepared label (values ``< N`` or 255).
        image: Matching image; if given, the label must have its size (and the image must decode).
        valid_raw: ``(K,)`` bool, the raw values the dataset defines; a raw value outside it is
            a bad sample, not silently mapped to 255 (None: every value ``< K`` is accepted).
        valid_raw_description: What the valid raw values are, for the error message.
        ignore_label: Ignore value of the prepared label: 255 (uint8 ``lut``), or 65535 for a
            uint16 ``lut`` (vocabularies above 255 classes; written as 16-bit TIFF/PNG).
    """

    src: str
    dst: str
    lut: np.ndarray
    num_classes: int
    image: str | None = None
    valid_raw: np.ndarray | None = None
    valid_raw_description: str = "a raw class id of the dataset"
    ignore_label: int = 255


@dataclass
class ConversionReport:
    """Counts of a conversion run; ``bad`` lists ``(file, reason)`` of skipped samples and
    ``remade`` ``(file, reason)`` of outputs of an earlier run that were damaged and made again."""

    converted: int = 0
    existing: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    remade: list[tuple[str, str]] = field(default_factory=list)


def read_raw_label(path: str) -> np.ndarray:
    """Reads a raw label map.

    Args:
        path: Single-channel PNG (mode ``L``/``P``/``I;16``/``I``) or ``.mat`` with ``LabelMap``
            (PASCAL Context).

    Returns:
        ``(H, W)`` integer array of raw values.

    Raises:
        DatasetError: If the file is missing, unreadable or not single-channel.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"raw label file not found: {path}")
    try:
        if path.endswith(".mat"):
            import scipy.io  # only PASCAL Context needs SciPy

            return np.asarray(scipy.io.loadmat(path)["LabelMap"])
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(
                    f"raw label file {path} has mode {img.mode!r}; expected one channel"
                )
            return np.asarray(img)
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 -- any decoder failure is a bad file, named here
        raise DatasetError(f"cannot read raw label file {path}: {e}") from e


def _check_raw_values(raw: np.ndarray, job: LabelJob) -> None:
    """Raises naming the file and the values when ``raw`` holds values outside ``job.valid_raw``.

    ``raw`` must already be within ``[0, len(job.lut))``.
    """
    if job.valid_raw is None or not raw.size:
        return
    present = np.flatnonzero(np.bincount(raw.ravel().astype(np.int64), minlength=len(job.lut)))
    bad = [int(v) for v in present if not job.valid_raw[v]]
    if bad:
        shown = ", ".join(str(v) for v in bad[:20]) + (" ..." if len(bad) > 20 else "")
        raise DatasetError(
            f"raw label file {job.src} has values {{{shown}}} that are not "
            f"{job.valid_raw_description}"
        )


def convert_label(job: LabelJob) -> np.ndarray:
    """Reads, converts and validates one label.

    Returns:
        ``(H, W)`` uint8 prepared label.

    Raises:
        DatasetError: Naming the file, for unreadable inputs, raw values outside the table or
            outside ``job.valid_raw``, a size different from the image's, or converted values
            outside the class range.
    """
    raw = read_raw_label(job.src)
    if raw.ndim != 2:
        raise DatasetError(f"raw label file {job.src} has shape {raw.shape}; expected (H, W)")
    if raw.size and (raw.min() < 0 or raw.max() >= len(job.lut)):
        raise DatasetError(
            f"raw label file {job.src} has values in [{raw.min()}, {raw.max()}], outside the "
            f"conversion table [0, {len(job.lut)})"
        )
    _check_raw_values(raw, job)
    label = job.lut[raw]  # (H, W) uint8 gather; no per-pixel Python loop
    if job.image is not None:
        read_image(job.image)  # raises if the image is corrupt (EXIF orientation is ignored)
        hw = image_size(job.image)
        if label.shape != hw:
            raise DatasetError(
                f"label file {job.src} has size (H, W) = {label.shape} but image {job.image} "
                f"has {hw}"
            )
    check_label_values(label, job.num_classes, job.src, job.ignore_label)
    return label


def _expected_size(job: LabelJob) -> tuple[int, int]:
    """``(H, W)`` the output of ``job`` must have: its image's, else its raw label's."""
    if job.image is not None and os.path.isfile(job.image):
        return image_size(job.image)
    if job.src.endswith(".mat"):
        return read_raw_label(job.src).shape[:2]
    return image_size(job.src)


def _run_job(job: LabelJob, skip_bad: bool = False) -> tuple[str, str]:
    """Converts one job; returns ``(status, message)`` with status converted/existing/remade/bad.

    An existing output is kept only when it decodes with the expected size; else it is made again
    (status ``remade``, the message says what was wrong).
    """
    damage = None
    if os.path.isfile(job.dst):
        try:
            damage = output_damage(job.dst, _expected_size(job))
        except DatasetError as e:  # the source itself is bad: convert_label names it below
            damage = str(e)
        if damage is None:
            return "existing", ""
    try:
        label = convert_label(job)
    except DatasetError as e:
        if not skip_bad:
            raise
        return "bad", str(e)
    os.makedirs(os.path.dirname(job.dst), exist_ok=True)
    tmp = job.dst + ".tmp"
    image_format = "TIFF" if job.dst.endswith((".tif", ".tiff")) else "PNG"
    Image.fromarray(label).save(tmp, format=image_format)  # uint16 arrays: 16-bit files
    os.replace(tmp, job.dst)
    return ("converted", "") if damage is None else ("remade", damage)


def _run_job_skip_bad(job: LabelJob) -> tuple[str, str]:
    return _run_job(job, skip_bad=True)


def run_label_jobs(
    jobs: Sequence[Any],
    workers: int = 4,
    skip_bad: bool = False,
    desc: str = "labels",
    run_one: Callable[[Any], tuple[str, str]] | None = None,
) -> ConversionReport:
    """Runs label conversions in a process pool with a progress bar.

    Args:
        jobs: Conversions to run (:class:`LabelJob`, or whatever ``run_one`` takes; each has a
            ``src`` attribute naming it in the report).
        workers: Worker processes (``<= 1`` runs in this process).
        skip_bad: Skip and count bad samples instead of stopping at the first one.
        desc: Progress-bar label.
        run_one: Module-level (picklable) function converting one job into ``(status,
            message)``, status ``converted``/``existing``/``remade``/``bad``; it handles
            ``skip_bad`` itself. Default: the :class:`LabelJob` conversion.

    Returns:
        The counts of converted, already existing and bad samples.

    Raises:
        DatasetError: The first bad sample's error, unless ``skip_bad``.
    """
    report = ConversionReport()
    fn = run_one or (_run_job_skip_bad if skip_bad else _run_job)
    if workers <= 1:
        results = (fn(j) for j in jobs)
        pool = None
    else:
        pool = Pool(workers)
        results = pool.imap(fn, jobs, chunksize=16)
    try:
        for job, (status, message) in zip(jobs, tqdm(results, total=len(jobs), desc=desc)):
            if status == "bad":
                report.bad.append((job.src, message))
            elif status == "remade":
                report.remade.append((job.src, message))
            elif status == "existing":
                report.existing += 1
            else:
                report.converted += 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return report


def verify_count(directory: str, expected: int, ext: str = ".png") -> str | None:
    """Compares the number of ``*ext`` files in ``directory`` with the official count.

    Returns:
        ``None`` if they match, else a message naming the directory and both counts.
    """
    found = (
        len([f for f in os.listdir(directory) if f.endswith(ext)])
        if os.path.isdir(directory)
        else 0
    )
    if found == expected:
        return None
    return f"{directory}: {found} '*{ext}' files, expected {expected}"


def print_summary(name: str, report: ConversionReport, count_errors: list[str]) -> int:
    """Prints a run's counts, bad samples and count mismatches; returns the exit status."""
    print(
        f"[{name}] converted {report.converted}, already present {report.existing}, "
        f"remade (damaged output) {len(report.remade)}, bad (skipped) {len(report.bad)}"
    )
    for path, reason in report.remade:
        print(f"  remade: {path}: {reason}")
    for path, reason in report.bad:
        print(f"  bad: {path}: {reason}")
    for message in count_errors:
        print(f"  count mismatch: {message}")
    return 1 if count_errors else 0


def read_label_names(path: str) -> dict[str, int]:
    """Parses PASCAL Context's ``labels.txt`` (``"<id>: <name>"`` per line) into name -> id.

    Raises:
        FileNotFoundError: Naming ``path`` when it does not exist.
        ValueError: Naming the file and line of a malformed line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PASCAL Context labels.txt not found: {path}")
    names = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            match = re.fullmatch(r"\s*(\d+)\s*:\s*(.+?)\s*", line)
            if match is None:
                raise ValueError(f"{path}:{line_no}: expected '<id>: <name>', got {line!r}")
            names[match.group(2)] = int(match.group(1))
    return names


def prepare_argument_parser(
    description: str, script: str, image_check: bool = True
) -> argparse.ArgumentParser:
    """The options every ``prepare_*.py`` script shares: ``--datasets-root`` (old: ``--root``),
    ``--workers``, ``--skip-bad`` and (when the script checks images against labels)
    ``--no-image-check``; ``--help`` ends with two example commands of ``script``.

    Args:
        description: what the script prepares.
        script: its path from the repository root, e.g. ``"datasets/prepare_voc_sem_seg.py"``.
        image_check: declare ``--no-image-check``.
    """
    parser = tool_parser(
        description,
        (f"python {script}", f"python {script} --datasets-root /data/datasets --workers 4"),
    )
    add_datasets_root(parser, "--root")
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1),
        help="parallel conversion processes (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-bad", action="store_true",
        help="skip and count bad samples instead of stopping at the first",
    )  # fmt: skip
    if image_check:
        parser.add_argument(
            "--no-image-check", action="store_true",
            help="do not decode images to check them against their labels",
        )  # fmt: skip
    return parser
