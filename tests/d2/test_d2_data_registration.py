"""detectron2 registrations: names, metadata, lazy listing and clear errors."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.detectron2

EXPECTED = {
    "coco_stuff_164k_zs_train": ("coco_stuff_171", None),
    "coco_stuff_164k_zs_val": ("coco_stuff_171", None),
    "pascal_context_59_zs_train": ("pascal_context_59", "zs3"),
    "pascal_context_59_zs_val": ("pascal_context_59", "zs3"),
    "pascal_context_59_zs_cascade_val": ("pascal_context_59", "cascade"),
    "voc_20_zs_train": ("voc_20", None),
    "voc_20_zs_val": ("voc_20", None),
    "ade20k_150_val": ("ade20k_150", None),
    "synthetic_zs_train": ("synthetic", None),
    "synthetic_zs_val": ("synthetic", None),
}


@pytest.mark.parametrize(("name", "split_key"), sorted(EXPECTED.items()))
def test_registered_with_zero_shot_metadata(name, split_key) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import chimeraseg.d2.data  # noqa: F401 -- registers
    from chimeraseg.data.splits import get_split

    assert name in DatasetCatalog.list()
    meta = MetadataCatalog.get(name)
    split = get_split(*split_key)
    assert meta.stuff_classes == list(split.class_names)
    assert meta.seen_classes == list(split.seen)
    assert meta.unseen_classes == list(split.unseen)
    assert len(meta.stuff_colors) == len(split.class_names)
    assert meta.class_split == split.name
    assert meta.ignore_label == 255 and meta.evaluator_type == "zs_sem_seg"


def test_registration_is_lazy_and_names_missing_directory(tmp_path) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from chimeraseg.d2.data.register_coco_stuff_zs import register_all_coco_stuff_zs
    from chimeraseg.data.io import DatasetError

    missing_root = tmp_path / "nowhere"
    register_all_coco_stuff_zs(str(missing_root))  # already registered names are kept
    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs

    register_all_synthetic_zs(str(missing_root), name_prefix="tmp_missing_synth", replace=True)
    assert not missing_root.exists()  # registering touched nothing
    try:
        with pytest.raises(DatasetError, match=r"directory not found: .*nowhere.*synthetic_zs"):
            DatasetCatalog.get("tmp_missing_synth_train")
    finally:
        for split in ("train", "val"):
            DatasetCatalog.remove(f"tmp_missing_synth_{split}")
            MetadataCatalog.remove(f"tmp_missing_synth_{split}")


def test_synthetic_dicts(tmp_path) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs
    from chimeraseg.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(str(tmp_path), seed=0, num_train=3, num_val=2, image_hw=(40, 56))
    register_all_synthetic_zs(str(tmp_path), name_prefix="tmp_synth_reg", replace=True)
    try:
        train = DatasetCatalog.get("tmp_synth_reg_train")
        val = DatasetCatalog.get("tmp_synth_reg_val")
        assert len(train) == 3 and len(val) == 2
        for record in train + val:
            assert os.path.isfile(record["file_name"])
            assert os.path.isfile(record["sem_seg_file_name"])
            assert record["file_name"].endswith(record["image_id"] + ".jpg")
        assert (val[0]["height"], val[0]["width"]) == (40, 56)
        assert MetadataCatalog.get("tmp_synth_reg_val").unseen_classes == [2, 7, 10]
    finally:
        for split in ("train", "val"):
            DatasetCatalog.remove(f"tmp_synth_reg_{split}")
            MetadataCatalog.remove(f"tmp_synth_reg_{split}")
