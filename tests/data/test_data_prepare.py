"""The datasets/prepare_*.py scripts on small fabricated official-format inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import load_script as load_repo_script
from PIL import Image

from chimeraseg.data.class_tables import PASCAL_CONTEXT_59_CLASSES
from chimeraseg.data.coco_stuff import COCO_STUFF_171_CLASSES
from chimeraseg.data.io import DatasetError

DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"


def load_script(name: str):
    """Imports ``datasets/<name>.py`` as a module."""
    return load_repo_script(f"datasets/{name}.py")


def _save(path: Path, array: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def _image(path: Path, hw: tuple[int, int]) -> None:
    _save(path, np.full((*hw, 3), 128, np.uint8), quality=90)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.asarray(img)


# Every raw value a stuffthingmap may hold, once: COCO id - 1 (0..182) and 255; 183..254 are no
# COCO id and make a sample bad (test_data_hardening.py).
ALL_VALUES = np.array([*range(183), 255], dtype=np.uint8).reshape(8, 23)
RAW_HW = ALL_VALUES.shape


def _make_coco(root: Path) -> None:
    coco = root / "coco"
    _save(coco / "stuffthingmaps" / "val2017" / "000000000001.png", ALL_VALUES)
    _image(coco / "val2017" / "000000000001.jpg", RAW_HW)


@pytest.mark.parametrize("workers", [1, 2])
def test_coco_stuff_conversion_covers_every_raw_id(tmp_path, workers, capsys) -> None:
    _make_coco(tmp_path)
    script = load_script("prepare_coco_stuff_164k_sem_seg")
    argv = ["--datasets-root", str(tmp_path), "--splits", "val2017", "--workers", str(workers)]
    assert script.main(argv) == 1  # 1 of the official 5,000 images: the count check fails
    assert "expected 5000" in capsys.readouterr().out
    out = _read(tmp_path / "coco/stuffthingmaps_detectron2/val2017/000000000001.png")
    out = out.ravel()  # out[raw] is the converted value of raw id ``raw``
    unused = [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]
    assert all(out[r] == 255 for r in unused)
    assert np.all(out[182:] == 255)  # out[182]: raw 182 = "other"; out[183]: raw 255 unlabeled
    used = [r for r in range(182) if r not in unused]
    assert [int(out[r]) for r in used] == list(range(171))
    names = {r: COCO_STUFF_171_CLASSES[out[r]] for r in (0, 20, 91, 123, 171, 181)}
    assert names == {0: "person", 20: "cow", 91: "banner", 123: "grass", 171: "wall-concrete",
                     181: "wood"}  # fmt: skip


def test_coco_conversion_is_idempotent(tmp_path, capsys) -> None:
    _make_coco(tmp_path)
    script = load_script("prepare_coco_stuff_164k_sem_seg")
    argv = ["--datasets-root", str(tmp_path), "--splits", "val2017", "--workers", "1"]
    script.main(argv)
    out_file = tmp_path / "coco/stuffthingmaps_detectron2/val2017/000000000001.png"
    mtime = os.stat(out_file).st_mtime_ns
    capsys.readouterr()
    script.main(argv)
    assert "converted 0, already present 1" in capsys.readouterr().out
    assert os.stat(out_file).st_mtime_ns == mtime


def _make_bad_coco(root: Path) -> None:
    coco = root / "coco"
    raw, images = coco / "stuffthingmaps" / "val2017", coco / "val2017"
    for i in range(3):  # three good samples
        _save(raw / f"good{i}.png", ALL_VALUES)
        _image(images / f"good{i}.jpg", RAW_HW)
    _save(raw / "size.png", ALL_VALUES)
    _image(images / "size.jpg", (8, 20))  # label size differs from its image
    raw.joinpath("corrupt.png").write_bytes(b"\x89PNG\r\n garbage")
    _image(images / "corrupt.jpg", RAW_HW)
    _save(raw / "noimage.png", ALL_VALUES)  # image missing
    _save(raw / "badimage.png", ALL_VALUES)
    images.joinpath("badimage.jpg").write_bytes(b"not an image")


def test_bad_samples_stop_or_are_skipped_and_counted(tmp_path, capsys) -> None:
    _make_bad_coco(tmp_path)
    script = load_script("prepare_coco_stuff_164k_sem_seg")
    argv = ["--datasets-root", str(tmp_path), "--splits", "val2017", "--workers", "1"]
    with pytest.raises(DatasetError, match=r"badimage\.jpg|corrupt\.png|noimage|size"):
        script.main(argv)
    capsys.readouterr()
    script.main([*argv, "--skip-bad"])
    out = capsys.readouterr().out
    assert "bad (skipped) 4" in out
    for name in ("size.png", "corrupt.png", "noimage.jpg", "badimage.jpg"):
        assert name in out
    done = sorted(os.listdir(tmp_path / "coco/stuffthingmaps_detectron2/val2017"))
    assert done == ["good0.png", "good1.png", "good2.png"]


def test_bad_raw_value_names_file(tmp_path) -> None:
    script = load_script("prepare_pascal_context_59")
    label_names = {name: 100 + i for i, name in enumerate(PASCAL_CONTEXT_59_CLASSES)}
    lut = script.context59_lut(label_names)
    from chimeraseg.data.conversion import LabelJob, convert_label

    scipy_io = pytest.importorskip("scipy.io")
    mat = tmp_path / "x.mat"
    scipy_io.savemat(mat, {"LabelMap": np.array([[1, 400]], dtype=np.uint16)})
    with pytest.raises(DatasetError, match=r"x\.mat has values in \[1, 400\]"):
        convert_label(LabelJob(str(mat), str(tmp_path / "x.png"), lut, 59))


def test_pascal_context_59_from_mat(tmp_path, capsys) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    voc = tmp_path / "VOCdevkit" / "VOC2010"
    # A fabricated labels.txt: the 59 names scattered among other 459-class names.
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1, 460))[:59]
    others = [f"thing{i}" for i in range(1, 460)]
    names = dict(zip(ids.tolist(), PASCAL_CONTEXT_59_CLASSES))
    lines = [f"{i}: {names.get(i, others[i - 1])}" for i in range(1, 460)]
    voc.mkdir(parents=True)
    (voc / "labels.txt").write_text("\n".join(lines) + "\n")
    raw = np.zeros((8, 60), np.uint16)  # 0 = unlabeled
    raw[1, :59] = ids  # the 59 classes in order
    raw[2, 0] = next(i for i in range(1, 460) if i not in names)  # a non-59 class
    (voc / "trainval").mkdir()
    for split, image_id in (("train", "2008_000002"), ("val", "2008_000003")):
        scipy_io.savemat(voc / "trainval" / f"{image_id}.mat", {"LabelMap": raw})
        _image(voc / "JPEGImages" / f"{image_id}.jpg", (8, 60))
        lists = voc / "ImageSets" / "SegmentationContext"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text(image_id + "\n")
    script = load_script("prepare_pascal_context_59")
    assert (
        script.main(["--datasets-root", str(tmp_path), "--workers", "1"]) == 1
    )  # counts: 1 != 4,996
    out = _read(voc / "annotations_detectron2/pc59/val/2008_000003.png")
    assert out.tolist()[1][:59] == list(range(59))
    assert out[2, 0] == 255 and out[0, 0] == 255 and out[1, 59] == 255


def test_voc_conversion(tmp_path) -> None:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    raw = np.array([[0, 1, 20, 255], [15, 16, 19, 0]], dtype=np.uint8)
    palette_png = Image.fromarray(raw, mode="P")
    palette_png.putpalette(list(range(256)) * 3)
    for split, image_id in (("train", "2007_000032"), ("val", "2007_000033")):
        (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        palette_png.save(voc / "SegmentationClass" / f"{image_id}.png")
        _image(voc / "JPEGImages" / f"{image_id}.jpg", raw.shape)
        sets = voc / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text(image_id + "\n")
    script = load_script("prepare_voc_sem_seg")
    assert script.main(["--datasets-root", str(tmp_path), "--workers", "1"]) == 1
    out = _read(voc / "annotations_detectron2" / "train" / "2007_000032.png")
    assert out.tolist() == [[255, 0, 19, 255], [14, 15, 18, 255]]


def test_ade20k_conversion(tmp_path) -> None:
    ade = tmp_path / "ADEChallengeData2016"
    raw = np.array([[0, 1, 150]], dtype=np.uint8)
    _save(ade / "annotations" / "validation" / "ADE_val_00000001.png", raw)
    _image(ade / "images" / "validation" / "ADE_val_00000001.jpg", raw.shape)
    script = load_script("prepare_ade20k_sem_seg")
    argv = ["--datasets-root", str(tmp_path), "--splits", "validation", "--workers", "1"]
    assert script.main(argv) == 1
    out = _read(ade / "annotations_detectron2" / "validation" / "ADE_val_00000001.png")
    assert out.tolist() == [[255, 0, 149]]
