"""Bad data is loud: images without labels, EXIF orientation, raw COCO values that are no id."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import load_script
from PIL import Image

from chimeraseg.data.coco_stuff import RAW_TO_CONTIGUOUS_LUT, RAW_VALID
from chimeraseg.data.io import (
    DatasetError,
    ids_from_split_lists,
    image_size,
    list_sem_seg_pairs,
    read_image,
)

EXIF_ORIENTATION = 0x0112
ROTATE_90 = 6  # "rotate 90 CW to display": a viewer shows the image transposed


def _image(path: Path, hw: tuple[int, int] = (6, 10), orientation: int | None = None) -> np.ndarray:
    """Writes an asymmetric RGB image (optionally with an EXIF orientation); returns its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((*hw, 3), np.uint8)
    pixels[: hw[0] // 2, : hw[1] // 3] = 255  # bright top-left block
    kwargs: dict = {"quality": 100} if path.suffix == ".jpg" else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        kwargs["exif"] = exif.tobytes()
    Image.fromarray(pixels).save(path, **kwargs)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))  # the stored grid, as decoded


def _label(path: Path, hw: tuple[int, int] = (6, 10), value: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(hw, value, np.uint8)).save(path)


# --------------------------------------------------------------- item 3: images without labels
def test_image_without_label_is_an_error_naming_the_image(tmp_path) -> None:
    for name in ("a", "b", "c"):
        _image(tmp_path / "img" / f"{name}.jpg")
    _label(tmp_path / "lbl" / "a.png")
    _label(tmp_path / "lbl" / "c.png")
    with pytest.raises(DatasetError, match=r"1 images without a label .*img/b\.jpg"):
        list_sem_seg_pairs(str(tmp_path / "img"), str(tmp_path / "lbl"))


def test_skipping_images_without_label_logs_the_count(tmp_path, caplog) -> None:
    for name in ("a", "b", "c"):
        _image(tmp_path / "img" / f"{name}.jpg")
    _label(tmp_path / "lbl" / "a.png")
    io_logger = logging.getLogger("chimeraseg.data.io")
    io_logger.addHandler(caplog.handler)  # detectron2's setup_logger stops propagation
    try:
        records = list_sem_seg_pairs(
            str(tmp_path / "img"), str(tmp_path / "lbl"), skip_missing_labels=True
        )
    finally:
        io_logger.removeHandler(caplog.handler)
    assert [r["image_id"] for r in records] == ["a"]
    assert "SKIPPED" in caplog.text and "2 images without a label" in caplog.text
    assert "b.jpg" in caplog.text and "c.jpg" in caplog.text


def test_split_list_drives_pairs_of_a_shared_image_directory(tmp_path) -> None:
    """VOC / Context: JPEGImages holds every split; the split list names the split's images."""
    for name in ("x1", "x2", "other_split"):
        _image(tmp_path / "JPEGImages" / f"{name}.jpg")
    _label(tmp_path / "lbl" / "x1.png")
    small, full = tmp_path / "train.txt", tmp_path / "aug.txt"
    small.write_text("x0\n")
    full.write_text("x1\nx2\n")
    ids = ids_from_split_lists([str(small), str(full)], str(tmp_path / "lbl"))
    assert ids == ["x1", "x2"]  # train.txt does not list the label x1: aug.txt is the split
    with pytest.raises(DatasetError, match=r"images without a label .*JPEGImages/x2\.jpg"):
        list_sem_seg_pairs(str(tmp_path / "JPEGImages"), str(tmp_path / "lbl"), image_ids=ids)
    with pytest.raises(DatasetError, match=r"no split list lists every label .*x1"):
        ids_from_split_lists([str(small)], str(tmp_path / "lbl"))


# ------------------------------------------------------------------ item 4: EXIF orientation
def test_read_image_ignores_exif_orientation(tmp_path) -> None:
    path = tmp_path / "rotated.jpg"
    stored = _image(path, (6, 10), orientation=ROTATE_90)
    with Image.open(path) as img:
        assert img.getexif()[EXIF_ORIENTATION] == ROTATE_90  # the tag is really there
    image = read_image(str(path))
    assert image.shape == (6, 10, 3) == (*image_size(str(path)), 3)
    assert np.array_equal(image, stored)


def test_prepare_script_reads_exif_images_on_the_stored_grid(tmp_path, capsys) -> None:
    coco = tmp_path / "coco"
    raw = np.zeros((6, 10), np.uint8)  # person everywhere, aligned to the stored grid
    _label(coco / "stuffthingmaps" / "val2017" / "1.png", value=0)
    _image(coco / "val2017" / "1.jpg", (6, 10), orientation=ROTATE_90)
    script = load_script("datasets/prepare_coco_stuff_164k_sem_seg.py")
    script.main(["--datasets-root", str(tmp_path), "--splits", "val2017", "--workers", "1"])
    assert "converted 1" in capsys.readouterr().out
    with Image.open(coco / "stuffthingmaps_detectron2" / "val2017" / "1.png") as img:
        assert np.array_equal(np.asarray(img), raw)


# ------------------------------------------------------- item 5: raw COCO values that are no id
def _coco_with_value(root: Path, value: int) -> None:
    coco = root / "coco"
    _label(coco / "stuffthingmaps" / "val2017" / "good.png", value=5)
    _image(coco / "val2017" / "good.jpg")
    bad = np.full((6, 10), 5, np.uint8)
    bad[0, 0] = value
    Image.fromarray(bad).save(coco / "stuffthingmaps" / "val2017" / "foreign.png")
    _image(coco / "val2017" / "foreign.jpg")


def test_coco_raw_value_that_is_no_coco_id_stops_naming_file_and_value(tmp_path, capsys) -> None:
    _coco_with_value(tmp_path, 200)
    script = load_script("datasets/prepare_coco_stuff_164k_sem_seg.py")
    argv = ["--datasets-root", str(tmp_path), "--splits", "val2017", "--workers", "1"]
    with pytest.raises(DatasetError, match=r"foreign\.png has values \{200\} that are not a COCO"):
        script.main(argv)
    capsys.readouterr()
    script.main([*argv, "--skip-bad"])
    out = capsys.readouterr().out
    assert "bad (skipped) 1" in out and "foreign.png" in out and "{200}" in out
    done = tmp_path / "coco" / "stuffthingmaps_detectron2" / "val2017"
    assert sorted(p.name for p in done.iterdir()) == ["good.png"]


def test_coco_unused_ids_and_other_still_map_to_ignore(tmp_path) -> None:
    raw = np.array([[11, 182, 255, 0]], np.uint8)  # unused id 12, "other" (183), unlabeled
    assert RAW_TO_CONTIGUOUS_LUT[raw].tolist() == [[255, 255, 255, 0]]
    assert RAW_VALID[[183, 200]].tolist() == [False, False]
    assert RAW_VALID[raw].all()
