"""The synthetic dataset: prepared COCO-Stuff layout, determinism, idempotence."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from chimeraseg_test_utils import load_script
from PIL import Image

from chimeraseg.data.io import read_image, read_label
from chimeraseg.data.splits import get_split
from chimeraseg.data.synthetic import make_synthetic_dataset

SMALL = {"num_train": 6, "num_val": 3, "image_hw": (40, 56)}


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_layout_and_labels(tmp_path) -> None:
    out = Path(make_synthetic_dataset(str(tmp_path), seed=0, num_train=8, num_val=4))
    assert out == tmp_path / "synthetic_zs"
    split = get_split("synthetic")
    seen_values: set[int] = set()
    for dirname, n in (("train2017", 8), ("val2017", 4)):
        images = sorted(os.listdir(out / dirname))
        labels = sorted(os.listdir(out / "stuffthingmaps_detectron2" / dirname))
        assert len(images) == n and [f[:-4] for f in images] == [f[:-4] for f in labels]
        assert images[0] == "000000000000.jpg"
        for image_file, label_file in zip(images, labels):
            image = read_image(str(out / dirname / image_file))
            assert image.shape == (160, 200, 3)  # default size, non-square
            label_path = out / "stuffthingmaps_detectron2" / dirname / label_file
            with Image.open(label_path) as img:
                assert img.mode == "L"
            label = read_label(str(label_path), split.num_classes, image.shape[:2])
            seen_values.update(np.unique(label).tolist())
    assert 255 in seen_values
    assert set(split.unseen) <= seen_values  # unseen classes do occur (in images and labels)
    assert set(range(split.num_classes)) <= seen_values  # every class somewhere
    meta = json.loads((out / "meta.json").read_text())
    assert meta["class_names"] == list(split.class_names)
    assert meta["unseen"] == list(split.unseen) and meta["seen"] == list(split.seen)


def test_textures_distinguish_classes(tmp_path) -> None:
    out = Path(make_synthetic_dataset(str(tmp_path), seed=3, **SMALL))
    sums = np.zeros((get_split("synthetic").num_classes, 3))
    counts = np.zeros(len(sums))
    for f in sorted(os.listdir(out / "train2017")):
        image = read_image(str(out / "train2017" / f)).astype(np.float64)
        label = np.asarray(
            Image.open(out / "stuffthingmaps_detectron2/train2017" / (f[:-4] + ".png"))
        )
        for c in np.unique(label[label != 255]):
            sums[c] += image[label == c].sum(0)
            counts[c] += (label == c).sum()
    present = counts > 0
    means = sums[present] / counts[present, None]  # (C, 3) mean colour per present class
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(len(means), dtype=bool)].min() > 10


def test_deterministic_by_seed(tmp_path) -> None:
    a = Path(make_synthetic_dataset(str(tmp_path / "a"), seed=1, **SMALL))
    b = Path(make_synthetic_dataset(str(tmp_path / "b"), seed=1, **SMALL))
    c = Path(make_synthetic_dataset(str(tmp_path / "c"), seed=2, **SMALL))
    assert _digests(a) == _digests(b)
    assert _digests(a) != _digests(c)
    assert _digests(a).keys() == _digests(c).keys()


def test_idempotent_and_repairs_missing_files(tmp_path) -> None:
    out = Path(make_synthetic_dataset(str(tmp_path), seed=0, **SMALL))
    label = out / "stuffthingmaps_detectron2" / "val2017" / "000000000001.png"
    before = _digests(out)
    mtime = os.stat(label).st_mtime_ns
    make_synthetic_dataset(str(tmp_path), seed=0, **SMALL)
    assert os.stat(label).st_mtime_ns == mtime  # nothing rewritten
    label.unlink()
    make_synthetic_dataset(str(tmp_path), seed=0, **SMALL)
    assert _digests(out) == before


def test_script_writes_dataset(tmp_path, capsys) -> None:
    script = load_script("datasets/make_synthetic_zs_dataset.py")
    argv = [
        "--datasets-root",
        str(tmp_path),
        "--num-train",
        "2",
        "--num-val",
        "1",
        "--height",
        "32",
    ]
    assert script.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "synthetic_zs")
    assert len(os.listdir(tmp_path / "synthetic_zs" / "train2017")) == 2
    assert read_image(str(tmp_path / "synthetic_zs/val2017/000000000000.jpg")).shape[:2] == (
        32,
        200,
    )
