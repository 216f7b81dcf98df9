"""ZeroShotDatasetMapper and the augmentations, on the synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.detectron2

CROP = 64


@pytest.fixture(scope="module")
def synthetic_names(tmp_path_factory):
    """Registers a small synthetic dataset under temporary names."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs
    from chimeraseg.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("d2_data_mapper")
    make_synthetic_dataset(str(root), seed=0, num_train=6, num_val=2, image_hw=(40, 56))
    register_all_synthetic_zs(str(root), name_prefix="tmp_synth_mapper", replace=True)
    yield "tmp_synth_mapper_train", "tmp_synth_mapper_val"
    for split in ("train", "val"):
        DatasetCatalog.remove(f"tmp_synth_mapper_{split}")
        MetadataCatalog.remove(f"tmp_synth_mapper_{split}")


def _cfg(train_name: str, val_name: str):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (train_name,)
    cfg.DATASETS.TEST = (val_name,)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (CROP,)
    cfg.INPUT.MAX_SIZE_TRAIN = 4 * CROP
    cfg.INPUT.RESIZE_RATIO_RANGE = (0.5, 2.0)  # added by add_chimeraseg_config in the project
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (CROP, CROP)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.MIN_SIZE_TEST = 80
    cfg.INPUT.MAX_SIZE_TEST = 4 * 80
    return cfg


def test_training_never_emits_unseen_labels(synthetic_names) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper
    from chimeraseg.data.io import read_label

    train_name, val_name = synthetic_names
    cfg = _cfg(train_name, val_name)
    mapper = ZeroShotDatasetMapper(cfg, is_train=True)
    meta = MetadataCatalog.get(train_name)
    unseen = set(meta.unseen_classes)
    records = DatasetCatalog.get(train_name)
    raw_unseen_pixels = sum(
        np.isin(read_label(r["sem_seg_file_name"], 12), list(unseen)).sum() for r in records
    )
    assert raw_unseen_pixels > 0  # the data does contain unseen classes
    emitted: set[int] = set()
    for _ in range(8):
        for record in records:
            out = mapper(record)
            image, sem_seg = out["image"], out["sem_seg"]
            assert image.shape == (3, CROP, CROP) and str(image.dtype) == "torch.uint8"
            assert sem_seg.shape == (CROP, CROP) and str(sem_seg.dtype) == "torch.uint8"
            assert (out["height"], out["width"]) == (40, 56)
            assert out["file_name"] == record["file_name"]
            emitted.update(sem_seg.unique().tolist())
    assert not emitted & unseen
    assert 255 in emitted and len(emitted - {255}) >= 5  # seen classes survive


def test_training_label_is_raw_label_with_unseen_pixels_set_to_ignore(synthetic_names) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper
    from chimeraseg.data.io import read_label

    train_name, _ = synthetic_names
    unseen = list(MetadataCatalog.get(train_name).unseen_classes)
    mapper = ZeroShotDatasetMapper(
        is_train=True, augmentations=[], num_classes=12, unseen_classes=unseen
    )
    changed = 0
    for record in DatasetCatalog.get(train_name):
        raw = read_label(record["sem_seg_file_name"], 12).astype(np.int64)
        expected = np.where(np.isin(raw, unseen), 255, raw)
        assert np.array_equal(mapper(record)["sem_seg"].numpy(), expected), record["file_name"]
        changed += int((expected != raw).sum())
    assert changed > 0  # unseen pixels exist, so mapping them anywhere but 255 fails


def test_training_records_the_unpadded_size(synthetic_names) -> None:
    from detectron2.data import DatasetCatalog

    from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper

    train_name, val_name = synthetic_names
    mapper = ZeroShotDatasetMapper(_cfg(train_name, val_name), is_train=True)
    padded = 0
    for _ in range(4):
        for record in DatasetCatalog.get(train_name):
            out = mapper(record)
            h, w = out["valid_hw"]
            assert 0 < h <= CROP and 0 < w <= CROP
            assert bool((out["sem_seg"][h:] == 255).all() and (out["sem_seg"][:, w:] == 255).all())
            assert not out["image"][:, h:].any() and not out["image"][:, :, w:].any()
            padded += (h, w) != (CROP, CROP)
    assert padded > 0  # resized images smaller than the crop occur (ratio range 0.5..2)


def test_without_unseen_classes_labels_pass_through(synthetic_names) -> None:
    from detectron2.data import DatasetCatalog

    from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper

    train_name, _ = synthetic_names
    mapper = ZeroShotDatasetMapper(
        is_train=True, augmentations=[], num_classes=12, unseen_classes=[]
    )
    emitted = set()
    for record in DatasetCatalog.get(train_name):
        emitted.update(mapper(record)["sem_seg"].unique().tolist())
    assert {2, 7, 10} & emitted  # so the zero-shot test above is able to fail


def test_test_mode_resizes_and_keeps_original_size(synthetic_names) -> None:
    from detectron2.data import DatasetCatalog

    from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper

    train_name, val_name = synthetic_names
    mapper = ZeroShotDatasetMapper(_cfg(train_name, val_name), is_train=False)
    out = mapper(DatasetCatalog.get(val_name)[0])
    assert "sem_seg" not in out
    assert tuple(out["image"].shape) == (3, 80, 112)  # short side 40 -> 80
    assert (out["height"], out["width"]) == (40, 56)


def test_bad_label_raises_naming_file(synthetic_names, tmp_path) -> None:
    from detectron2.data import DatasetCatalog
    from PIL import Image

    from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper
    from chimeraseg.data.io import DatasetError

    train_name, _ = synthetic_names
    record = dict(DatasetCatalog.get(train_name)[0])
    bad = np.full((40, 56), 40, np.uint8)  # class 40 does not exist (12 classes)
    Image.fromarray(bad).save(tmp_path / "bad.png")
    record["sem_seg_file_name"] = str(tmp_path / "bad.png")
    mapper = ZeroShotDatasetMapper(
        is_train=True, augmentations=[], num_classes=12, unseen_classes=[2]
    )
    with pytest.raises(DatasetError, match=r"bad\.png has values \{40\}"):
        mapper(record)
    Image.fromarray(bad[:30]).save(tmp_path / "short.png")
    record["sem_seg_file_name"] = str(tmp_path / "short.png")
    with pytest.raises(DatasetError, match=r"short\.png has size"):
        mapper(record)


def test_ratio_resize_range() -> None:
    from chimeraseg.d2.data.augmentations import RandomRatioResize

    aug = RandomRatioResize(512, 2048, (0.5, 2.0))
    image = np.zeros((160, 200, 3), np.uint8)
    shorts = []
    for _ in range(200):
        t = aug.get_transform(image)
        assert abs(t.new_w / t.new_h - 200 / 160) < 0.02  # aspect ratio kept
        shorts.append(t.new_h)
    assert 256 <= min(shorts) < 300 and 950 < max(shorts) <= 1024
    wide = np.zeros((100, 1000, 3), np.uint8)  # the long side limits: 2048 * r / 1000
    t = RandomRatioResize(512, 2048, (1.0, 1.0)).get_transform(wide)
    assert (t.new_h, t.new_w) == (205, 2048)


def test_photometric_distortion_changes_colours_only() -> None:
    from chimeraseg.d2.data.augmentations import PhotometricDistortion, PhotometricTransform

    rng = np.random.default_rng(0)
    image = rng.integers(30, 220, (20, 24, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (20, 24), dtype=np.uint8)
    identity = PhotometricTransform(None, None, True, None, None)
    assert np.array_equal(identity.apply_image(image), image)
    brighter = PhotometricTransform(10.0, None, True, None, None).apply_image(image)
    assert np.array_equal(brighter.astype(int), image.astype(int) + 10)
    hue = PhotometricTransform(None, None, True, None, 18).apply_image(image)
    assert np.abs(hue.astype(int) - image).mean() > 5
    aug = PhotometricDistortion()
    changed = 0
    for _ in range(20):
        t = aug.get_transform(image)
        assert np.array_equal(t.apply_segmentation(label), label)
        changed += not np.array_equal(t.apply_image(image), image)
    assert changed >= 10
