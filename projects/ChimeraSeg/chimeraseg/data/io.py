"""Validated readers for images and label maps, and pairing of image/label directories.

Every failure raises :class:`DatasetError` naming the offending file, so that a corrupt sample in a
dataset of 100k images is found from the message alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from chimeraseg import IGNORE_LABEL

_SHOWN = 5  # file names quoted in a message about many files

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, or inconsistent with its image or class table."""


class ImageTooLargeError(DatasetError):
    """An image has more pixels than PIL decodes safely (its decompression-bomb limit)."""


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(W', H')``: ``(W, H)`` scaled so that the longer side is at most ``max_side``."""
    w, h = size
    scale = min(1.0, max_side / max(w, h, 1))
    return max(1, round(w * scale)), max(1, round(h * scale))


@contextlib.contextmanager
def _opened(path: str, what: str) -> Iterator[Image.Image]:
    """The lazily opened image (header read, nothing decoded); failures become DatasetErrors."""
    if not os.path.isfile(path):
        raise DatasetError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as img:
            yield img
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{what} file {path} has too many pixels to decode: {e}") from e
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read {what} file {path}: {e}") from e


def _open(path: str, what: str, max_side: int | None = None) -> Image.Image:
    """Opens and decodes an image file, turning every failure into a DatasetError.

    With ``max_side``, a larger image is decoded at a reduced size (JPEG's DCT scaling) and
    then resized (box filter) to :func:`fit_size`, so no full-size RGB copy is made.
    """
    with _opened(path, what) as img:
        target = fit_size(img.size, max_side) if max_side else img.size
        if target == img.size:
            img.load()
            return img.copy()
        img.draft(None, target)  # JPEG: decodes at 1/2..1/8 scale, still at least ``target``
        img.load()
        if img.mode in ("P", "1"):  # no box filter for palette or bilevel images
            return img.convert("RGB").resize(target, Image.Resampling.BOX)
        return img.resize(target, Image.Resampling.BOX)


def read_image(path: str, max_side: int | None = None) -> np.ndarray:
    """Reads an image as RGB on its stored pixel grid; EXIF orientation tags are ignored.

    This is the project's one image reader (training mapper, evaluation, prepare scripts, demo).
    COCO-Stuff and PASCAL Context labels are aligned to the stored pixel grid, so applying an EXIF
    orientation (as ``detectron2.data.detection_utils.read_image`` and ``cv2.imread`` do) would
    rotate an image against its label.

    Args:
        path: Image file (any format PIL decodes; JPEG for the benchmarks).
        max_side: Decode a larger image at the reduced size :func:`fit_size` (the memory of
            a JPEG decode follows the reduced size); None = as stored.

    Returns:
        ``(H, W, 3)`` uint8 RGB array, ``(H, W)`` as stored in the file (or reduced to
        ``max_side``). 16-bit grayscale images are scaled (0..65535 -> 0..255), not clipped.

    Raises:
        DatasetError: If the file is missing or cannot be decoded, or naming the file and mode
            for samples with no 8-bit scale (float images, 32-bit values beyond 16 bits).
    """
    image = _open(path, "image", max_side)
    if image.mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_rgb(np.asarray(image), path, image.mode)
    if image.mode == "F":
        raise DatasetError(
            f"image file {path} has mode 'F' (32-bit float samples), which has no defined 8-bit "
            "scale; save it as an 8- or 16-bit image"
        )
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


# Grayscale modes with more than 8 bits per sample (16-bit PNG / TIFF files open as these);
# PIL's convert("RGB") clips them to 255 (an all-white image) instead of scaling.
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _wide_gray_to_rgb(gray: np.ndarray, path: str, mode: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 from a 16-bit grayscale ``(H, W)`` array: 0..65535 -> 0..255.

    Raises:
        DatasetError: naming the file and mode when a sample is outside 0..65535 (a 32-bit
            image that is not 16-bit data).
    """
    gray = gray.astype(np.int64)
    if gray.size and (gray.min() < 0 or gray.max() > 65535):
        raise DatasetError(
            f"image file {path} has mode {mode!r} with samples in [{gray.min()}, {gray.max()}], "
            "outside the 16-bit range 0..65535 that ChimeraSeg scales to 8 bits"
        )
    scaled = ((gray * 255 + 32767) // 65535).astype(np.uint8)  # (H, W), rounded
    return np.repeat(scaled[:, :, None], 3, axis=2)  # (H, W, 3)


def check_label_values(
    label: np.ndarray, num_classes: int, path: str, ignore_label: int = IGNORE_LABEL
) -> None:
    """Checks that every label value is a class id in ``[0, num_classes)`` or ``ignore_label``.

    Args:
        label: ``(H, W)`` uint8 (or uint16, for vocabularies above 255 classes) label map.
        num_classes: Number of classes ``N``.
        path: File name used in the error message.
        ignore_label: The ignore value (255; 65535 for the uint16 labels of PC-459 / ADE-847).

    Raises:
        DatasetError: Listing the offending values.
    """
    size = max(int(label.max(initial=0)) + 1, num_classes, ignore_label + 1)
    counts = np.bincount(label.ravel(), minlength=size)  # histogram, no per-pixel loop
    counts[ignore_label] = 0
    bad = np.flatnonzero(counts[num_classes:]) + num_classes
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:20]) + (" ..." if bad.size > 20 else "")
        raise DatasetError(
            f"label file {path} has values {{{shown}}} that are neither a class id in "
            f"[0, {num_classes}) nor {ignore_label}"
        )


# PIL modes of single-channel label files: 8-bit PNG, and 16-bit PNG / TIFF (uint16 labels).
_LABEL_MODES = {"L": np.uint8, "P": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I": np.uint16}


def read_label(
    path: str,
    num_classes: int,
    expected_hw: tuple[int, int] | None = None,
    ignore_label: int = IGNORE_LABEL,
) -> np.ndarray:
    """Reads and validates a prepared label map (single channel, class ids and the ignore value).

    Args:
        path: Label PNG (mode ``L``, or ``P`` whose indices are the labels), or a 16-bit PNG /
            TIFF for vocabularies above 255 classes (PASCAL Context-459, ADE20K-847).
        num_classes: Number of classes ``N``; values must be in ``[0, N)`` or ``ignore_label``.
        expected_hw: ``(H, W)`` of the matching image; checked if given.
        ignore_label: The ignore value (255, or 65535 for 16-bit labels).

    Returns:
        ``(H, W)`` uint8 (8-bit files) or uint16 (16-bit files) label map.

    Raises:
        DatasetError: If the file is missing, unreadable, not single-channel, of the wrong size,
            or holds values outside the class range.
    """
    img = _open(path, "label")
    if img.mode not in _LABEL_MODES:
        raise DatasetError(
            f"label file {path} has mode {img.mode!r}; expected one of {sorted(_LABEL_MODES)}"
        )
    raw = np.asarray(img)
    if raw.size and (raw.min() < 0 or raw.max() > np.iinfo(_LABEL_MODES[img.mode]).max):
        raise DatasetError(f"label file {path} has values outside [0, 65535]")
    label = raw.astype(_LABEL_MODES[img.mode], copy=False)
    if expected_hw is not None and tuple(label.shape) != tuple(expected_hw):
        raise DatasetError(
            f"label file {path} has size (H, W) = {tuple(label.shape)} but its image has "
            f"{tuple(expected_hw)}"
        )
    check_label_values(label, num_classes, path, ignore_label)
    return label


def image_size(path: str) -> tuple[int, int]:
    """Reads ``(H, W)`` from an image header without decoding the pixels.

    Raises:
        ImageTooLargeError: beyond PIL's decompression-bomb limit.
        DatasetError: If the file is missing or not an image.
    """
    with _opened(path, "image") as img:
        w, h = img.size
    return h, w


def output_damage(path: str, size: tuple[int, int]) -> str | None:
    """Why an existing output file cannot be kept, or None when it decodes with ``size``.

    The prepare scripts skip outputs of an earlier run; a file truncated or replaced since then
    must be made again, not counted as present.

    Args:
        path: an image or label file that exists.
        size: its expected ``(H, W)``.
    """
    try:
        decoded = _open(path, "output")
    except DatasetError as e:
        return f"{path} does not decode ({e})"
    if (decoded.height, decoded.width) != tuple(size):
        return f"{path} has size (H, W) = {(decoded.height, decoded.width)}, expected {size}"
    return None


def _files_with_suffix(directory: str, suffix: str) -> list[str]:
    """Sorted ids (names without ``suffix``) of the ``*suffix`` files of ``directory``."""
    return sorted(f[: -len(suffix)] for f in os.listdir(directory) if f.endswith(suffix))


def _quote(items: Sequence[str]) -> str:
    """``"a, b, c ... (N in all)"`` for messages about many files."""
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" ... ({len(items)} in all)" if len(items) > _SHOWN else "")


def _check_dirs(image_dir: str, label_dir: str) -> None:
    for what, d in (("image", image_dir), ("label", label_dir)):
        if not os.path.isdir(d):
            raise DatasetError(
                f"{what} directory not found: {d} (set $DETECTRON2_DATASETS and prepare the "
                "dataset as described in datasets/README.md)"
            )


def read_id_list(path: str) -> list[str]:
    """Image ids of a split list (``ImageSets/...txt``): the first token of each non-empty line.

    Raises:
        DatasetError: naming ``path`` when it does not exist, or the file and line of an id that
            is not a plain name (``../x``, ``a/b``: see :func:`check_plain_id`).
    """
    if not os.path.isfile(path):
        raise DatasetError(f"split list not found: {path}")
    ids = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                ids.append(check_plain_id(line.split()[0], f"{path}:{line_no}"))
    return ids


def check_plain_id(sample_id: str, where: str) -> str:
    """Returns ``sample_id`` if it is a plain file name stem, else raises naming ``where``.

    Ids read from files become parts of output paths; one holding a separator or ``..`` would
    read or write outside the dataset root.

    Raises:
        DatasetError: naming ``where`` and the id.
    """
    bad = sample_id in (".", "..") or any(c in sample_id for c in ("/", "\\", "\0", os.sep))
    if bad or (os.altsep and os.altsep in sample_id):
        raise DatasetError(
            f"{where}: id {sample_id!r} is not a plain file name (no path separators, no '.' or "
            "'..'); ids of split lists name files inside the dataset folder"
        )
    return sample_id


def ids_from_split_lists(
    list_files: Sequence[str], label_dir: str, label_ext: str = ".png"
) -> list[str]:
    """The ids of the first existing split list that lists every label of ``label_dir``.

    For datasets whose image directory is shared by several splits (PASCAL VOC / Context
    ``JPEGImages``), the official split list, not the label directory, says which images belong
    to a split; the candidates cover the lists a prepare script may have used (e.g. VOC
    ``train.txt`` and the SBD-augmented ``aug.txt``).

    Raises:
        DatasetError: naming the lists when none exists or none lists every label.
    """
    existing = [f for f in list_files if os.path.isfile(f)]
    if not existing:
        raise DatasetError(f"none of the split lists {list(list_files)} exists")
    labels = set(_files_with_suffix(label_dir, label_ext)) if os.path.isdir(label_dir) else set()
    unlisted = {}
    for list_file in existing:
        ids = read_id_list(list_file)
        unlisted[list_file] = sorted(labels - set(ids))
        if not unlisted[list_file]:
            return ids
    detail = "; ".join(f"{f} lacks {_quote(u)}" for f, u in unlisted.items())
    raise DatasetError(f"no split list lists every label of {label_dir}: {detail}")


def _unpaired(image_dir: str, label_dir: str, ids: Sequence[str], exts: tuple[str, str]) -> dict:
    """Ids whose image or label file is missing: ``{"image": [...], "label": [...]}``."""
    out: dict[str, list[str]] = {"image": [], "label": []}
    for image_id in ids:
        if not os.path.isfile(os.path.join(image_dir, image_id + exts[0])):
            out["image"].append(image_id)
        elif not os.path.isfile(os.path.join(label_dir, image_id + exts[1])):
            out["label"].append(image_id)
    return out


def _report_unpaired(
    unpaired: dict, image_dir: str, label_dir: str, exts: tuple[str, str], skip: bool
) -> None:
    """Raises (or, with ``skip``, logs a warning) naming images without labels and vice versa."""
    problems = []
    if unpaired["label"]:
        names = [os.path.join(image_dir, i + exts[0]) for i in unpaired["label"]]
        problems.append(f"{len(names)} images without a label in {label_dir}: {_quote(names)}")
    if unpaired["image"]:
        names = [os.path.join(image_dir, i + exts[0]) for i in unpaired["image"]]
        problems.append(
            f"image file not found: {_quote(names)} ({len(names)} labelled or listed ids have no "
            "image)"
        )
    if not problems:
        return
    if not skip:
        raise DatasetError(
            "; ".join(problems) + " (prepare the missing labels, or set "
            "DATASETS.SKIP_IMAGES_WITHOUT_LABEL True to skip these samples)"
        )
    logger.warning("SKIPPED samples: %s", "; ".join(problems))


def list_sem_seg_pairs(
    image_dir: str,
    label_dir: str,
    image_ext: str = ".jpg",
    label_ext: str = ".png",
    read_sizes: bool = False,
    image_ids: Sequence[str] | None = None,
    skip_missing_labels: bool = False,
) -> list[dict]:
    """Pairs every image with its label, as detectron2 semantic-segmentation dicts.

    The images drive the listing: ``image_ids`` if given (a split list, for an image directory
    shared by several splits), else every ``*<image_ext>`` file of ``image_dir``. An image without
    a label (or a label without an image) is an error naming the files; with
    ``skip_missing_labels`` such samples are left out and their count is logged as a warning.

    Args:
        image_dir: Directory of ``<id><image_ext>`` images.
        label_dir: Directory of ``<id><label_ext>`` prepared labels.
        image_ext: Image file extension.
        label_ext: Label file extension.
        read_sizes: Add ``height``/``width`` read from the image headers (costs one header read
            per image; the training mapper sets them anyway).
        image_ids: The split's ids (in this order) instead of listing ``image_dir``.
        skip_missing_labels: Skip unpaired samples with a logged count instead of raising.

    Returns:
        Dicts with ``file_name``, ``sem_seg_file_name``, ``image_id`` (and ``height``,
        ``width``), sorted by id (or in ``image_ids`` order).

    Raises:
        DatasetError: Naming the directory if either is missing or no pair is found, or naming
            the files of images without labels / labels without images.
    """
    _check_dirs(image_dir, label_dir)
    exts = (image_ext, label_ext)
    listed = image_ids is not None
    ids = list(image_ids) if listed else _files_with_suffix(image_dir, image_ext)
    unpaired = _unpaired(image_dir, label_dir, ids, exts)
    if not listed:  # labels whose image is missing from the directory
        unpaired["image"] = sorted(set(_files_with_suffix(label_dir, label_ext)) - set(ids))
    _report_unpaired(unpaired, image_dir, label_dir, exts, skip_missing_labels)
    bad = set(unpaired["image"]) | set(unpaired["label"])
    records = []
    for image_id in (i for i in ids if i not in bad):
        image_file = os.path.join(image_dir, image_id + image_ext)
        label_file = os.path.join(label_dir, image_id + label_ext)
        record = {"file_name": image_file, "sem_seg_file_name": label_file, "image_id": image_id}
        if read_sizes:
            record["height"], record["width"] = image_size(image_file)
        records.append(record)
    if not records:
        raise DatasetError(f"no '*{image_ext}' image with a '*{label_ext}' label in {image_dir}")
    return records
