"""Your own dataset: a split declared from names, folders registered from Python or a config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG
from PIL import Image

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402

NAMES = ["lava", "moss", "ice", "glass"]
COLORS = np.array([[200, 40, 10], [40, 140, 40], [200, 230, 250], [120, 160, 170]], np.uint8)


def _make_folder(root: Path, counts: dict[str, int], hw: tuple[int, int] = (64, 80)) -> None:
    """Images of four vertical bands in class colours (+ noise) and their labels."""
    rng = np.random.default_rng(0)
    for part, count in counts.items():
        for i in range(count):
            order = rng.permutation(len(NAMES))
            label = np.repeat(order, hw[1] // len(NAMES))[None].repeat(hw[0], 0).astype(np.uint8)
            label[:2] = 255  # an ignored border
            image = COLORS[np.minimum(label, 3)] + rng.integers(0, 20, (*hw, 3), dtype=np.uint8)
            for sub, array, ext in (("images", image, ".jpg"), ("labels", label, ".png")):
                path = root / sub / part / f"{part}_{i:03d}{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path, quality=95)
    (root / "classes.txt").write_text("# my classes\n" + "\n".join(NAMES) + "\n")


def test_python_api_registers_folders_with_the_split(tmp_path) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from chimeraseg.d2.data.register_custom import register_zero_shot_folders
    from chimeraseg.data.splits import get_split

    _make_folder(tmp_path, {"train": 2, "val": 1})
    split = register_zero_shot_folders("py_mine", str(tmp_path), "classes.txt", unseen=["ice"])
    assert get_split("py_mine") is split
    assert (split.class_names, split.unseen, split.seen) == (tuple(NAMES), (2,), (0, 1, 3))
    meta = MetadataCatalog.get("py_mine_val")
    assert (meta.stuff_classes, meta.unseen_classes) == (NAMES, [2])
    assert len(DatasetCatalog.get("py_mine_train")) == 2
    assert "height" in DatasetCatalog.get("py_mine_val")[0]  # evaluation split: sizes read


def test_bad_declarations_name_the_problem(tmp_path) -> None:
    from chimeraseg.d2.data.register_custom import declare_split

    with pytest.raises(ValueError, match=r"unseen names \['snow'\] are not among its classes"):
        declare_split("bad_mine", NAMES, unseen=["snow"])
    with pytest.raises(ValueError, match=r"indices \[3\] are neither seen nor unseen"):
        declare_split("bad_mine", NAMES, unseen=["ice"], seen=["lava", "moss"])
    _make_folder(tmp_path, {"train": 1})
    opts = ["DATASETS.CUSTOM.NAME", "cfg_bad", "DATASETS.CUSTOM.ROOT", str(tmp_path),
            "DATASETS.CUSTOM.CLASSES", "['a', 'b']",
            "DATASETS.CUSTOM.CLASSES_FILE", "classes.txt"]  # fmt: skip
    with pytest.raises(ValueError, match="CUSTOM.CLASSES and DATASETS.CUSTOM.CLASSES_FILE"):
        get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts)
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        get_chimeraseg_cfg(
            SYNTHETIC_CONFIG, [*opts[:4], "DATASETS.CUSTOM.CLASSES_FILE", "nowhere.txt"]
        )


def test_config_declared_dataset_trains_and_evaluates(tiny_opts, tmp_path) -> None:
    from chimeraseg.d2 import ChimeraSegTrainer

    root = tmp_path / "mine"
    _make_folder(root, {"train": 4, "val": 2})
    config = tmp_path / "mine.yaml"
    config.write_text(
        f"_BASE_: {SYNTHETIC_CONFIG}\n"
        "DATASETS:\n"
        f"  CUSTOM:\n    NAME: cfg_mine\n    ROOT: {root}\n    CLASSES_FILE: classes.txt\n"
        "    UNSEEN: ['ice']\n"
        "  TRAIN: ('cfg_mine_train',)\n  TEST: ('cfg_mine_val',)\n"
        "INPUT:\n  MIN_SIZE_TRAIN: (64,)\n  MIN_SIZE_TEST: 64\n"
    )
    opts = [*tiny_opts, "OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_ITER", "2"]
    trainer = ChimeraSegTrainer(get_chimeraseg_cfg(str(config), opts))
    assert trainer.model.train_vocabulary == NAMES
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = trainer._last_eval_results["sem_seg"]
    assert {f"IoU-{n}" for n in NAMES} <= set(results)
    assert all(math.isfinite(results[k]) for k in ("sIoU", "uIoU", "hIoU", "mIoU"))
