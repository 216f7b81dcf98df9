"""Prepare scripts and readers on hostile or damaged inputs: split-list ids that leave the root,
raw values that are no class, damaged outputs of an earlier run, 16-bit grayscale images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import load_script
from PIL import Image

from chimeraseg.data.io import DatasetError, ids_from_split_lists, read_id_list, read_image


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _make_voc(root: Path, ids: dict[str, str], raw: np.ndarray) -> Path:
    """A VOC2012 layout whose split lists hold ``ids`` ({split: id}); every label is ``raw``."""
    voc = root / "VOCdevkit" / "VOC2012"
    for split, image_id in ids.items():
        sets = voc / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text(f"{image_id}\n")
        if "/" not in image_id:
            _save(voc / "SegmentationClass" / f"{image_id}.png", raw)
            _save(voc / "JPEGImages" / f"{image_id}.jpg", np.full((*raw.shape, 3), 90, np.uint8))
    return voc


# ------------------------------------------------------------ item 2: ids that leave the root
@pytest.mark.parametrize("bad_id", ["../../x/victim", "a/b", "..", "/etc/victim", "a\\b"])
def test_split_list_ids_must_be_plain_names(tmp_path, bad_id) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text(f"2007_000032\n\n{bad_id} extra\n")
    with pytest.raises(DatasetError, match=r"train\.txt:3: id .* is not a plain file name"):
        read_id_list(str(listing))
    with pytest.raises(DatasetError, match=r"train\.txt:3"):
        ids_from_split_lists([str(listing)], str(tmp_path))


def test_voc_prepare_writes_nothing_outside_the_root(tmp_path) -> None:
    root = tmp_path / "root"
    raw = np.ones((4, 6), np.uint8)
    _make_voc(root, {"train": "../../../../x/victim", "val": "2007_000033"}, raw)
    victim_dir = root.parent / "x"
    with pytest.raises(DatasetError, match=r"train\.txt:1: id '\.\./\.\./\.\./\.\./x/victim'"):
        load_script("datasets/prepare_voc_sem_seg.py").main(
            ["--datasets-root", str(root), "--workers", "1"]
        )
    assert not victim_dir.exists() and not list(tmp_path.rglob("victim*"))


# -------------------------------------------------------- item 5: raw values that are no class
def test_voc_raw_value_that_is_no_class_stops_naming_file_and_value(tmp_path, capsys) -> None:
    raw = np.array([[0, 1, 50, 255]], np.uint8)
    voc = _make_voc(tmp_path, {"train": "2007_000032", "val": "2007_000033"}, raw)
    script = load_script("datasets/prepare_voc_sem_seg.py")
    message = r"2007_000032\.png has values \{50\} that are not a VOC"
    with pytest.raises(DatasetError, match=message):
        script.main(["--datasets-root", str(tmp_path), "--workers", "1"])
    assert script.main(["--datasets-root", str(tmp_path), "--workers", "1", "--skip-bad"]) == 1
    out = capsys.readouterr().out
    assert "bad (skipped) 1" in out and "{50}" in out
    assert not (voc / "annotations_detectron2" / "train" / "2007_000032.png").exists()


def test_ade20k_raw_value_that_is_no_class_stops_naming_file_and_value(tmp_path, capsys) -> None:
    ade = tmp_path / "ADEChallengeData2016"
    _save(ade / "annotations" / "validation" / "ADE_val_1.png", np.array([[0, 150, 200]], np.uint8))
    _save(ade / "images" / "validation" / "ADE_val_1.jpg", np.zeros((1, 3, 3), np.uint8))
    script = load_script("datasets/prepare_ade20k_sem_seg.py")
    argv = ["--datasets-root", str(tmp_path), "--splits", "validation", "--workers", "1"]
    message = r"ADE_val_1\.png has values \{200\} that are not an ADE"
    with pytest.raises(DatasetError, match=message):
        script.main(argv)
    script.main([*argv, "--skip-bad"])
    assert "bad (skipped) 1" in capsys.readouterr().out


# ------------------------------------------------- item 11: damaged outputs are made again
def test_truncated_or_resized_output_is_remade_not_counted_present(tmp_path, capsys) -> None:
    raw = np.array([[0, 1, 20, 255], [3, 4, 5, 6]], np.uint8)
    voc = _make_voc(tmp_path, {"train": "2007_000032", "val": "2007_000033"}, raw)
    script = load_script("datasets/prepare_voc_sem_seg.py")
    argv = ["--datasets-root", str(tmp_path), "--workers", "1"]
    script.main(argv)
    out_dir = voc / "annotations_detectron2"
    train, val = out_dir / "train" / "2007_000032.png", out_dir / "val" / "2007_000033.png"
    good = train.read_bytes()
    train.write_bytes(good[: len(good) // 2])  # truncated by something else
    _save(val, np.zeros((3, 3), np.uint8))  # decodes, but not at the label's size
    capsys.readouterr()
    script.main(argv)
    out = capsys.readouterr().out
    assert out.count("remade (damaged output) 1") == 2
    assert "does not decode" in out and "expected (2, 4)" in out
    assert train.read_bytes() == good
    with Image.open(val) as img:
        assert img.size == (4, 2)
    script.main(argv)
    assert capsys.readouterr().out.count("already present 1, remade (damaged output) 0") == 2


def test_ade847_damaged_output_is_remade(tmp_path) -> None:
    from chimeraseg.data.ade20k_847 import ADE847Job, convert_ade847

    src = tmp_path / "ADE_val_1.jpg"
    _save(src, np.full((6, 8, 3), 100, np.uint8))
    _save(tmp_path / "ADE_val_1_seg.png", np.zeros((6, 8, 3), np.uint8))
    job = ADE847Job(str(src), str(tmp_path / "out.jpg"), str(tmp_path / "out.tif"), False)
    assert convert_ade847(job) == ("converted", "")
    assert convert_ade847(job) == ("existing", "")
    (tmp_path / "out.tif").write_bytes(b"II*\x00 truncated")
    status, message = convert_ade847(job)
    assert status == "remade" and "out.tif" in message
    assert convert_ade847(job) == ("existing", "")


# -------------------------------------------------- item 4: 16-bit grayscale images are scaled
def test_16_bit_grayscale_image_is_scaled_not_white(tmp_path) -> None:
    gray = np.array([[0, 257, 32896], [65535, 1000, 65280]], np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(gray).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # the mode the issue reports
    rgb = read_image(str(path))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == [[0, 1, 128], [255, 4, 254]]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_images_without_an_8_bit_scale_are_refused_naming_file_and_mode(tmp_path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((2, 2), 0.5, np.float32)).save(path)
    with pytest.raises(DatasetError, match=r"float\.tif has mode 'F'"):
        read_image(str(path))
    wide = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(wide)
    with pytest.raises(DatasetError, match=r"wide\.tif has mode 'I' with samples in \[0, 70000\]"):
        read_image(str(wide))
