"""PASCAL Context-459 and ADE20K-847 preparation on small fabricated official-layout inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import load_script
from PIL import Image

from chimeraseg.data.class_tables import ade20k_847_table, pascal_context_459_classes
from chimeraseg.data.io import DatasetError, read_label


def _image(path: Path, hw: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*hw, 3), 100, np.uint8)).save(path, quality=90)


def _make_context(root: Path, list_name: str = "pascalcontext_val.txt") -> Path:
    scipy_io = pytest.importorskip("scipy.io")
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "trainval").mkdir(parents=True)
    names = [n.replace(" ", "") for n in pascal_context_459_classes()]  # as labels.txt writes
    (voc / "labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in enumerate(names, 1)))
    raw = np.arange(460, dtype=np.uint16).reshape(10, 46)  # every raw id once, 0 = unlabeled
    scipy_io.savemat(voc / "trainval" / "2008_000009.mat", {"LabelMap": raw})
    _image(voc / "JPEGImages" / "2008_000009.jpg", raw.shape)
    (voc / list_name).parent.mkdir(parents=True, exist_ok=True)
    (voc / list_name).write_text("2008_000009\n")
    return voc


@pytest.mark.parametrize(
    "list_name", ["pascalcontext_val.txt", "ImageSets/SegmentationContext/val.txt"]
)
def test_pascal_context_459_labels_are_ids_minus_one(tmp_path, capsys, list_name) -> None:
    voc = _make_context(tmp_path, list_name)
    script = load_script("datasets/prepare_pascal_context_459.py")
    assert (
        script.main(["--datasets-root", str(tmp_path), "--workers", "1"]) == 1
    )  # 1 of 5,104 images
    assert "expected 5104" in capsys.readouterr().out
    out = voc / "annotations_detectron2" / "pc459_val" / "2008_000009.tif"
    label = read_label(str(out), 459, ignore_label=65535).ravel()
    assert label.dtype == np.uint16
    assert label[0] == 65535 and label[1:].tolist() == list(range(459))
    assert pascal_context_459_classes()[label[3]] == "air conditioner"  # raw id 3, labels.txt


def test_pascal_context_459_refuses_another_label_list(tmp_path) -> None:
    voc = _make_context(tmp_path)
    lines = (voc / "labels.txt").read_text().splitlines()
    lines[1] = "2: airplane"
    (voc / "labels.txt").write_text("\n".join(lines) + "\n")
    script = load_script("datasets/prepare_pascal_context_459.py")
    with pytest.raises(ValueError, match=r"id 2: 'airplane' \(expected 'aeroplane'\)"):
        script.main(["--datasets-root", str(tmp_path), "--workers", "1"])


def _seg_png(indices: np.ndarray) -> np.ndarray:
    """The RGB ``_seg.png`` encoding of ADE20K object class indices (R = idx // 256 * 10)."""
    seg = np.zeros((*indices.shape, 3), np.uint8)
    seg[..., 0] = indices // 256 * 10
    seg[..., 1] = indices % 256
    seg[..., 2] = 7  # instance ids live in B; ignored
    return seg


@pytest.mark.parametrize("workers", [1, 2])
def test_ade20k_847_decodes_maps_and_resizes(tmp_path, capsys, workers) -> None:
    table = ade20k_847_table()
    ade = tmp_path / "ADE20K_2021_17_01"
    scene = ade / "images" / "ADE" / "validation" / "urban" / "street"
    picks = [0, 1, 500, 846]  # labels; their ADE indices go into the small image
    small = np.array([[table[p][0] for p in picks] + [3500, 1]] * 3)  # 3500: not a 847 class
    _image(scene / "ADE_val_00000001.jpg", small.shape)
    Image.fromarray(_seg_png(small)).save(scene / "ADE_val_00000001_seg.png")
    big = np.full((600, 800), table[2][0])  # short side 600 > 512 -> 512 x 683
    big[:, 400:] = table[3][0]
    _image(scene / "ADE_val_00000002.jpg", big.shape)
    Image.fromarray(_seg_png(big)).save(scene / "ADE_val_00000002_seg.png")
    script = load_script("datasets/prepare_ade20k_847.py")
    argv = ["--datasets-root", str(tmp_path), "--workers", str(workers)]
    assert script.main(argv) == 1  # 2 of the official 2,000
    assert "converted 2" in capsys.readouterr().out
    labels = ade / "annotations_detectron2" / "validation"
    first = read_label(str(labels / "ADE_val_00000001.tif"), 847, ignore_label=65535)
    assert first[0].tolist() == [*picks, 65535, 65535]  # index 1 is not a 847 class either
    second = read_label(str(labels / "ADE_val_00000002.tif"), 847, ignore_label=65535)
    assert second.shape == (512, 683) and set(np.unique(second)) == {2, 3}
    with Image.open(ade / "images_detectron2" / "validation" / "ADE_val_00000002.jpg") as img:
        assert img.size == (683, 512)
    assert script.main(argv) == 1
    assert "converted 0, already present 2" in capsys.readouterr().out


def test_ade20k_847_missing_segmentation_is_named_or_skipped(tmp_path, capsys) -> None:
    scene = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "validation" / "x"
    _image(scene / "ADE_val_00000003.jpg", (4, 4))
    script = load_script("datasets/prepare_ade20k_847.py")
    argv = ["--datasets-root", str(tmp_path), "--workers", "1"]
    with pytest.raises(DatasetError, match=r"ADE_val_00000003_seg\.png"):
        script.main(argv)
    script.main([*argv, "--skip-bad"])
    assert "bad (skipped) 1" in capsys.readouterr().out


def _reference_nearest(src: int, dst: int) -> np.ndarray:
    """OpenCV ``INTER_NEAREST``: destination index ``x`` reads ``floor(x · src / dst)``."""
    return np.minimum(np.arange(dst) * src // dst, src - 1)


def _reference_linear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV ``INTER_LINEAR`` in float: pixel centres, two taps per axis, borders clamped."""

    def taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = (np.arange(dst) + 0.5) * (src / dst) - 0.5
        i0 = np.floor(f).astype(int)
        a = f - i0
        a[i0 < 0], i0[i0 < 0] = 0.0, 0
        a[i0 >= src - 1], i0[i0 >= src - 1] = 0.0, src - 1
        return i0, np.minimum(i0 + 1, src - 1), a

    y0, y1, b = taps(image.shape[0], size[0])
    x0, x1, a = taps(image.shape[1], size[1])
    img = image.astype(np.float64)
    a, b = a[None, :, None], b[:, None, None]
    top = img[y0][:, x0] * (1 - a) + img[y0][:, x1] * a
    bottom = img[y1][:, x0] * (1 - a) + img[y1][:, x1] * a
    return top * (1 - b) + bottom * b


def test_ade20k_847_resampling_is_cat_segs_opencv_formula() -> None:
    """A crafted 683 × 1024 image: labels coding their own column (row), noise pixels. The
    labels follow ``floor(x · scale)`` exactly and the image OpenCV's bilinear formula (within
    the 1 grey level of its fixed-point weights); PIL's nearest and antialiased bilinear, used
    before, do not."""
    from chimeraseg.data.ade20k_847 import resize_like_cat_seg, short_side_size

    h, w = 683, 1024
    size = short_side_size(h, w)
    assert size == (512, 768)
    columns = np.broadcast_to(np.arange(w, dtype=np.uint16), (h, w)).copy()
    rows = np.broadcast_to(np.arange(h, dtype=np.uint16)[:, None], (h, w)).copy()
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out_image, out_columns = resize_like_cat_seg(image, columns, size)
    _, out_rows = resize_like_cat_seg(image, rows, size)
    assert out_image.shape == (512, 768, 3) and out_image.dtype == np.uint8
    assert out_columns.dtype == np.uint16
    assert (out_columns == _reference_nearest(w, 768)[None, :]).all()
    assert (out_rows == _reference_nearest(h, 512)[:, None]).all()
    reference = _reference_linear(image, size)
    assert np.abs(out_image.astype(np.float64) - reference).max() <= 1.0
    pil_columns = np.asarray(Image.fromarray(columns).resize((768, 512), Image.NEAREST))
    assert (pil_columns[0] != out_columns[0]).sum() == 512  # 2 of every 3 columns differ
    pil_image = np.asarray(Image.fromarray(image).resize((768, 512), Image.BILINEAR))
    assert np.abs(pil_image.astype(np.float64) - reference).max() > 10  # antialiasing
