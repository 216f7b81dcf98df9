"""Validated readers: each bad-data case raises a DatasetError naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from chimeraseg.data.io import DatasetError, list_sem_seg_pairs, read_image, read_label
from chimeraseg.data.zero_shot import mask_unseen, unseen_to_ignore_lut


def _write(path, array) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def test_read_image_and_label_roundtrip(tmp_path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    label = np.array([[0, 1, 255], [2, 2, 0]], dtype=np.uint8)
    img_file = _write(tmp_path / "a.png", image)
    assert np.array_equal(read_image(img_file), image)
    lbl_file = _write(tmp_path / "a_label.png", label)
    out = read_label(lbl_file, num_classes=3, expected_hw=(2, 3))
    assert out.dtype == np.uint8 and np.array_equal(out, label)


def test_missing_image(tmp_path) -> None:
    path = tmp_path / "missing.jpg"
    with pytest.raises(DatasetError, match=r"image file not found: .*missing\.jpg"):
        read_image(str(path))


def test_corrupt_image(tmp_path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match=r"cannot read image file .*broken\.jpg"):
        read_image(str(path))


def test_truncated_image(tmp_path) -> None:
    path = tmp_path / "truncated.jpg"
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"truncated\.jpg"):
        read_image(str(path))


def test_missing_label(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"label file not found: .*nolabel\.png"):
        read_label(str(tmp_path / "nolabel.png"), num_classes=3)


def test_label_size_differs_from_image(tmp_path) -> None:
    path = _write(tmp_path / "small.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(DatasetError, match=r"small\.png.*\(4, 5\).*\(4, 6\)"):
        read_label(path, num_classes=3, expected_hw=(4, 6))


def test_label_values_out_of_range(tmp_path) -> None:
    label = np.array([[0, 1, 2], [7, 254, 255]], dtype=np.uint8)
    path = _write(tmp_path / "bad_values.png", label)
    with pytest.raises(DatasetError, match=r"bad_values\.png has values \{7, 254\}"):
        read_label(path, num_classes=3)
    assert read_label(path, num_classes=255).shape == (2, 3)


def test_label_must_be_single_channel(tmp_path) -> None:
    path = _write(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"rgb\.png has mode 'RGB'"):
        read_label(path, num_classes=3)


def test_list_pairs_errors_name_directory_and_file(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"label directory not found: .*labels_nowhere"):
        list_sem_seg_pairs(str(tmp_path), str(tmp_path / "labels_nowhere"))
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    _write(tmp_path / "lbl" / "x1.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DatasetError, match=r"image file not found: .*x1\.jpg"):
        list_sem_seg_pairs(str(tmp_path / "img"), str(tmp_path / "lbl"))
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "img" / "x1.jpg")
    (record,) = list_sem_seg_pairs(str(tmp_path / "img"), str(tmp_path / "lbl"), read_sizes=True)
    assert record["image_id"] == "x1" and (record["height"], record["width"]) == (2, 3)


def test_mask_unseen() -> None:
    label = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)
    out = mask_unseen(label, [1, 3])
    assert np.array_equal(out, [[0, 255, 2], [255, 255, 255]])
    assert out.dtype == np.uint8 and np.array_equal(label, [[0, 1, 2], [3, 255, 1]])  # a copy
    with pytest.raises(ValueError, match=r"unseen class id 255 is not in \[0, 255\)"):
        mask_unseen(label, [255])
    with pytest.raises(ValueError, match=r"unseen class id -1 is not in \[0, 255\)"):
        mask_unseen(label, [-1])
    with pytest.raises(ValueError, match="label must be uint8, got int64"):
        mask_unseen(label.astype(np.int64), [1])
    # Class 0 may be unseen; another ignore value is used as given.
    assert np.array_equal(mask_unseen(label, [0], ignore_label=200), [[200, 1, 2], [3, 255, 1]])


def test_unseen_to_ignore_lut_is_the_identity_but_for_unseen_ids() -> None:
    lut = unseen_to_ignore_lut([0, 7, 254])
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    expected = np.arange(256)
    expected[[0, 7, 254]] = 255
    assert np.array_equal(lut, expected)
