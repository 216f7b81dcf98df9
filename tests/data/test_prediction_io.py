"""Label PNGs and their vocabulary JSON: round trip, bit depth by vocabulary, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from chimeraseg.data.io import read_label
from chimeraseg.data.prediction_io import (
    label_dtype,
    write_label_png,
    write_vocabulary_json,
)


@pytest.mark.parametrize(("num_classes", "mode"), [(12, "L"), (256, "L"), (847, "I;16")])
def test_label_png_round_trip_and_bit_depth(tmp_path, num_classes: int, mode: str) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, size=(17, 23))
    labels[0, 0] = num_classes - 1  # the largest index must survive the chosen bit depth
    path = tmp_path / "out" / "a.png"
    write_label_png(str(path), labels, num_classes)
    with Image.open(path) as img:
        assert img.mode == mode
    np.testing.assert_array_equal(read_label(str(path), num_classes), labels)


def test_bit_depth_follows_vocabulary_not_values(tmp_path) -> None:
    # All values are small, but a 300-class vocabulary still writes 16 bits, like its other PNGs.
    write_label_png(str(tmp_path / "b.png"), np.zeros((4, 4), dtype=np.int64), 300)
    with Image.open(tmp_path / "b.png") as img:
        assert img.mode == "I;16"
    assert label_dtype(256) is np.uint8 and label_dtype(257) is np.uint16


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.full((3, 3), 12), "class index 12 is outside"),
        (np.full((3, 3), -1), "class index -1 is outside"),
        (np.zeros((3, 3, 1), dtype=np.int64), "2-D integer array"),
        (np.zeros((3, 3), dtype=np.float32), "2-D integer array"),
    ],
)
def test_bad_labels_name_file_and_value(tmp_path, labels: np.ndarray, message: str) -> None:
    path = str(tmp_path / "c.png")
    with pytest.raises(ValueError, match=message) as info:
        write_label_png(path, labels, 12)
    assert path in str(info.value)


def test_vocabulary_json(tmp_path) -> None:
    path = tmp_path / "vocabulary.json"
    write_vocabulary_json(str(path), ["grass", "tree, trees"], [False, True], 0.5)
    record = json.loads(path.read_text())
    assert record["classes"][1] == {"index": 1, "name": "tree, trees", "unseen": True}
    assert record["png_dtype"] == "uint8" and record["gamma"] == 0.5
    with pytest.raises(ValueError, match="2 names but 1 unseen"):
        write_vocabulary_json(str(path), ["a", "b"], [True], 0.0)
