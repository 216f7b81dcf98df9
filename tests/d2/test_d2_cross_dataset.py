"""Cross-dataset registrations (ADE-150/847, VOC-20, Context-59/459) and transfer evaluation."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, REPO, SYNTHETIC_CONFIG
from PIL import Image

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402

TRANSFER = {
    "ade20k_150_val": (("ade20k_150", None), 150, 255),
    "ade20k_847_val": (("ade20k_847", None), 847, 65535),
    "voc_20_val": (("voc_20", "transfer"), 20, 255),
    "pascal_context_59_val": (("pascal_context_59", "transfer"), 59, 255),
    "pascal_context_459_val": (("pascal_context_459", None), 459, 65535),
}


@pytest.mark.parametrize("name", sorted(TRANSFER))
def test_transfer_sets_hold_every_class_and_none_unseen(name) -> None:
    from detectron2.data import MetadataCatalog

    import chimeraseg.d2.data  # noqa: F401 -- registers
    from chimeraseg.data.splits import get_split

    split_key, num_classes, ignore = TRANSFER[name]
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == list(get_split(*split_key).class_names)
    assert len(meta.stuff_classes) == num_classes == len(meta.seen_classes)
    assert meta.unseen_classes == [] and meta.ignore_label == ignore


@contextlib.contextmanager
def _registered_under(root: Path, names: list[str], register):
    """Re-registers ``names`` under ``root`` for the test, restoring the originals afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    saved = {n: (DatasetCatalog[n], MetadataCatalog.get(n).as_dict()) for n in names}
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)
    register(str(root))
    try:
        yield
    finally:
        for n, (loader, meta) in saved.items():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
            DatasetCatalog.register(n, loader)
            MetadataCatalog.get(n).set(**{k: v for k, v in meta.items() if k != "name"})


def _pair(image: Path, label: Path, values: np.ndarray) -> None:
    for path in (image, label):
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*values.shape, 3), 90, np.uint8)).save(image)
    Image.fromarray(values).save(label)


def test_pascal_context_459_listing_follows_the_val_list(tmp_path) -> None:
    from detectron2.data import DatasetCatalog

    from chimeraseg.d2.data.register_pascal_context_459 import register_all_pascal_context_459

    voc = tmp_path / "VOCdevkit" / "VOC2010"
    for image_id in ("2008_000001", "2008_000002"):
        _pair(voc / "JPEGImages" / f"{image_id}.jpg",
              voc / "annotations_detectron2" / "pc459_val" / f"{image_id}.tif",
              np.full((6, 8), 458, np.uint16))  # fmt: skip
    _pair(
        voc / "JPEGImages" / "2008_000003.jpg", tmp_path / "unused.png", np.zeros((2, 2), np.uint8)
    )
    (voc / "pascalcontext_val.txt").write_text("2008_000001\n2008_000002\n")
    with _registered_under(tmp_path, ["pascal_context_459_val"], register_all_pascal_context_459):
        dicts = DatasetCatalog.get("pascal_context_459_val")
    assert [Path(d["file_name"]).stem for d in dicts] == ["2008_000001", "2008_000002"]
    assert all(d["sem_seg_file_name"].endswith(".tif") and d["height"] == 6 for d in dicts)


def _fake_ade847(root: Path) -> None:
    ade = root / "ADE20K_2021_17_01"
    rng = np.random.default_rng(0)
    for i in range(2):
        label = rng.integers(0, 847, (40, 48)).astype(np.uint16)
        label[:4] = 65535
        stem = f"ADE_val_{i:08d}"
        _pair(ade / "images_detectron2" / "validation" / f"{stem}.jpg",
              ade / "annotations_detectron2" / "validation" / f"{stem}.tif", label)  # fmt: skip


def test_coco_style_model_evaluates_on_ade20k_847_with_miou_only(tiny_opts, tmp_path) -> None:
    from chimeraseg.d2 import ChimeraSegTrainer
    from chimeraseg.d2.data.register_ade20k import register_all_ade20k
    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs
    from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator
    from chimeraseg.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(str(tmp_path), num_train=2, num_val=1, image_hw=(40, 48))
    register_all_synthetic_zs(str(tmp_path), name_prefix="x847_synth", replace=True)
    _fake_ade847(tmp_path)
    opts = [*tiny_opts, "DATASETS.TRAIN", "('x847_synth_train',)",
            "DATASETS.TEST", "('ade20k_847_val',)", "OUTPUT_DIR", str(tmp_path / "out"),
            "MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True", "TEST.GAMMA", "0.5"]  # fmt: skip
    names = ["ade20k_150_val", "ade20k_847_val"]
    with _registered_under(tmp_path, names, register_all_ade20k):
        cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts)
        model = ChimeraSegTrainer.build_model(cfg)
        evaluator = ZeroShotSemSegEvaluator.from_config(cfg, "ade20k_847_val")  # no plot files
        results = ChimeraSegTrainer.test(cfg, model, [evaluator])["sem_seg"]
    assert len(model.vocabulary) == 847
    assert math.isfinite(results["mIoU"]) and "IoU-building, edifice" in results
    assert not {"sIoU", "uIoU", "hIoU", "gamma"} & set(results)
    assert not any("@gamma" in k for k in results)


def test_cross_dataset_configs_keep_coco_training_and_set_each_target() -> None:
    targets = {
        "ade20k_150": "ade20k_150_val", "ade20k_847": "ade20k_847_val",
        "voc_20": "voc_20_val", "pascal_context_59": "pascal_context_59_val",
        "pascal_context_459": "pascal_context_459_val",
    }  # fmt: skip
    for target, dataset in targets.items():
        path = REPO / "configs" / "cross-dataset" / f"chimeraseg_mitb4_80k_coco_to_{target}.yaml"
        cfg = get_chimeraseg_cfg(str(path))
        assert cfg.DATASETS.TRAIN == ("coco_stuff_164k_zs_train",)  # the checkpoint's vocabulary
        assert list(cfg.DATASETS.TEST) == [dataset]
        assert cfg.MODEL.BACKBONE.NAME == "mit_b4"


def test_voc_20_transfer_set_lists_the_val_ids(tmp_path) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from chimeraseg.d2.data.register_voc_zs import register_all_voc_zs

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for image_id in ("2007_000033", "2007_000042"):
        _pair(voc / "JPEGImages" / f"{image_id}.jpg",
              voc / "annotations_detectron2" / "val" / f"{image_id}.png",
              np.full((5, 7), 19, np.uint8))  # fmt: skip
    _pair(voc / "JPEGImages" / "2007_000099.jpg", tmp_path / "x.png", np.zeros((2, 2), np.uint8))
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "val.txt").write_text("2007_000033\n2007_000042\n")
    names = ["voc_20_zs_train", "voc_20_zs_val", "voc_20_val"]
    with _registered_under(tmp_path, names, register_all_voc_zs):
        transfer = DatasetCatalog.get("voc_20_val")
        zero_shot = DatasetCatalog.get("voc_20_zs_val")
        assert MetadataCatalog.get("voc_20_zs_val").unseen_classes == [15, 16, 17, 18, 19]
    assert [d["file_name"] for d in transfer] == [d["file_name"] for d in zero_shot]
    assert [Path(d["file_name"]).stem for d in transfer] == ["2007_000033", "2007_000042"]
