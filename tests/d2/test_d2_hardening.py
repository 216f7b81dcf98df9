"""The detectron2 layer refuses unsafe or missing weights, bad data and bad config values; its
checkpoints and metrics survive a kill."""

from __future__ import annotations

import io
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON
from PIL import Image
from torch import nn

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402

pytestmark = pytest.mark.detectron2

EXIF_ORIENTATION, ROTATE_90 = 0x0112, 6


class _Planter:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of the trainer runs."""


def _train_net():
    return load_script("tools/train_net.py", "chimeraseg_train_net_hardening")


def _demo():
    return load_script("tools/demo.py", "chimeraseg_demo_hardening")


def _eval_args(extra: list[str]):
    from detectron2.engine import default_argument_parser

    return default_argument_parser().parse_args(
        ["--config-file", SYNTHETIC_CONFIG, "--eval-only", *extra]
    )


def _rotated_jpeg(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """An asymmetric JPEG tagged "rotate 90"; returns its stored pixels."""
    pixels = np.zeros((*hw, 3), np.uint8)
    pixels[: hw[0] // 2, : hw[1] // 3] = 255
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90
    Image.fromarray(pixels).save(path, quality=100, exif=exif.tobytes())
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _capture(logger_name: str, caplog: pytest.LogCaptureFixture) -> logging.Logger:
    """Attaches caplog to a logger whose propagation detectron2's setup_logger may have cut."""
    logger = logging.getLogger(logger_name)
    logger.addHandler(caplog.handler)
    return logger


# ------------------------------------------------------------------------------ item 1: .pkl
def test_pkl_weights_are_refused_without_unpickling(tmp_path) -> None:
    from chimeraseg.d2 import ChimeraSegCheckpointer
    from chimeraseg.utils.checkpoint_io import CheckpointError

    marker, path = tmp_path / "planted", tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"model": _Planter(marker), "__author__": "someone"}))
    with pytest.raises(CheckpointError, match=r"refusing to load '.*R-50\.pkl'"):
        ChimeraSegCheckpointer(nn.Linear(2, 2)).resume_or_load(str(path), resume=False)
    assert not marker.exists()


# ----------------------------------------------------------------- item 12: not a checkpoint
def test_random_bytes_weights_name_the_file_without_unsafe_advice(tmp_path) -> None:
    from chimeraseg.d2 import ChimeraSegCheckpointer
    from chimeraseg.utils.checkpoint_io import CheckpointError

    path = tmp_path / "model_final.pth"
    path.write_bytes(np.random.default_rng(12).bytes(4096))  # the same bytes every run
    with pytest.raises(CheckpointError, match=r"'.*model_final\.pth' is not a checkpoint") as info:
        ChimeraSegCheckpointer(nn.Linear(2, 2)).load(str(path))
    assert "weights_only" not in str(info.value)


# ------------------------------------------------------------ item 6: no random student unasked
def test_checkpoint_without_chimeraseg_weights_is_refused(tmp_path) -> None:
    from chimeraseg.d2 import ChimeraSegCheckpointer
    from chimeraseg.d2.checkpoint import WeightsMismatchError

    path = tmp_path / "imagenet_backbone.pth"
    torch.save({"model": {"patch_embed1.proj.weight": torch.ones(3)}}, path)
    with pytest.raises(WeightsMismatchError, match=r"imagenet_backbone\.pth' holds no ChimeraSeg"):
        ChimeraSegCheckpointer(nn.Linear(2, 2)).load(str(path))


def test_eval_only_needs_trained_weights_unless_allowed(tiny_opts, synthetic_root, tmp_path):
    from chimeraseg.d2.checkpoint import WeightsMismatchError
    from chimeraseg.utils.checkpoint_io import CheckpointError

    tn = _train_net()
    opts = [*tiny_opts, "OUTPUT_DIR", str(tmp_path / "eval")]
    with pytest.raises(CheckpointError, match="MODEL.WEIGHTS is empty"):
        tn.main(_eval_args(opts))
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"backbone.other.weight": torch.ones(3)}}, foreign)
    with pytest.raises(WeightsMismatchError, match=r"foreign\.pth' holds no ChimeraSeg weights"):
        tn.main(_eval_args([*opts, "MODEL.WEIGHTS", str(foreign)]))
    allowed = tn.main(_eval_args([*opts, "MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True"]))
    assert "hIoU" in allowed["sem_seg"]


def test_demo_needs_trained_weights_unless_allowed(tiny_opts, synthetic_root) -> None:
    from chimeraseg.utils.checkpoint_io import CheckpointError

    demo = _demo()
    with pytest.raises(CheckpointError, match="MODEL.WEIGHTS is empty"):
        demo.build_demo(SYNTHETIC_CONFIG, tiny_opts, ["cat", "sky"])


# -------------------------------------------------------------- item 7: batch of one warns
def test_global_batch_of_one_warns_once_naming_the_keys(tiny_opts, synthetic_root, tmp_path):
    from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg
    from chimeraseg.d2 import trainer as trainer_module
    from chimeraseg.d2.config_checks import small_batch_warning

    messages: list[str] = []
    original = trainer_module.logger.warning
    trainer_module.logger.warning = lambda msg, *a, **k: messages.append(msg % a if a else msg)
    try:
        opts = [*tiny_opts, "OUTPUT_DIR", str(tmp_path), "SOLVER.IMS_PER_BATCH", "1"]
        ChimeraSegTrainer(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))
    finally:
        trainer_module.logger.warning = original
    batch = [m for m in messages if "IMS_PER_BATCH" in m]
    assert len(batch) == 1
    for key in ("SOLVER.IMS_PER_BATCH = 1", "MODEL.CHIMERASEG.SGD.WEIGHT",
                "MODEL.CHIMERASEG.SAM.WEIGHT", "at least 2", "16"):  # fmt: skip
        assert key in batch[0]
    assert small_batch_warning(get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts)) is None
    local = get_chimeraseg_cfg(
        SYNTHETIC_CONFIG, [*tiny_opts, "MODEL.CHIMERASEG.SGD.GATHER", "False"]
    )
    assert "GATHER False" in small_batch_warning(local, world_size=2)
    off = ["MODEL.CHIMERASEG.SGD.WEIGHT", "0.0", "MODEL.CHIMERASEG.SAM.WEIGHT", "0.0"]
    no_losses = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, *off])
    assert small_batch_warning(no_losses) is None


# ---------------------------------------------------------------- item 8: empty vocabulary
def test_empty_vocabulary_is_an_error(tiny_opts, synthetic_root, tmp_path) -> None:
    from detectron2.modeling import build_model

    from chimeraseg.d2 import get_chimeraseg_cfg

    demo = _demo()
    image = sorted((Path(synthetic_root) / "synthetic_zs" / "val2017").glob("*.jpg"))[0]
    argv = ["--config-file", SYNTHETIC_CONFIG, "--input", str(image), "--output", str(tmp_path),
            "--vocabulary", ",", "--allow-random-weights", *tiny_opts]  # fmt: skip
    with pytest.raises(SystemExit, match="--vocabulary ',' holds no class name"):
        demo.main(argv)
    with pytest.raises(ValueError, match="vocabulary is empty"):
        demo.build_demo(SYNTHETIC_CONFIG, tiny_opts, [])
    model = build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts))
    with pytest.raises(ValueError, match="vocabulary is empty"):
        model.set_vocabulary([])


# ------------------------------------------------------------- item 9: config values refused
@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("MODEL.CHIMERASEG.SAM.WEIGHT", "-0.5", ">= 0"),
        ("MODEL.CHIMERASEG.SGD.WEIGHT", "-1.0", ">= 0"),
        ("MODEL.CHIMERASEG.SEG_LOSS.CE_WEIGHT", "-1.0", ">= 0"),
        ("MODEL.CHIMERASEG.SEG_LOSS.FOCAL_WEIGHT", "-1.0", ">= 0"),
        ("MODEL.CHIMERASEG.SEG_LOSS.FOCAL_GAMMA", "-2.0", ">= 0"),
        ("MODEL.CHIMERASEG.SGD.K_STEP", "-0.1", ">= 0"),
        ("MODEL.CHIMERASEG.LOGIT_TAU", "0.0", "> 0"),
        ("MODEL.CHIMERASEG.SGD.TAU", "-0.07", "> 0"),
        ("MODEL.CHIMERASEG.SAM.TAU_F", "0.0", "> 0"),
        ("MODEL.CHIMERASEG.SAM.TAU_C", "0.0", "> 0"),
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.UNSEEN_TEMPERATURE", "0.0", "> 0"),
        ("MODEL.CHIMERASEG.SGD.K_INIT", "0", "int >= 1"),
    ],
)
def test_out_of_range_config_values_name_key_and_value(key, value, rule) -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg

    with pytest.raises(ValueError, match=rf"config key {key} = {value} must be .*{rule}"):
        get_chimeraseg_cfg(None, [key, value])


def test_model_build_validates_configs_not_built_by_get_chimeraseg_cfg() -> None:
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from chimeraseg.d2 import add_chimeraseg_config

    cfg = get_cfg()
    add_chimeraseg_config(cfg)
    cfg.MODEL.CHIMERASEG.LOGIT_TAU = 0.0
    with pytest.raises(ValueError, match="config key MODEL.CHIMERASEG.LOGIT_TAU = 0.0"):
        build_model(cfg)


# --------------------------------------------------------------- item 3: images without labels
def test_registered_dataset_names_the_image_without_label(tiny_opts, tmp_path, caplog) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg
    from chimeraseg.d2.data.register_common import (
        dataset_dicts,
        register_sem_seg_dataset,
        split_metadata,
    )
    from chimeraseg.data.io import DatasetError
    from chimeraseg.data.splits import get_split

    for name in ("a", "b", "c"):
        (tmp_path / "img").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / f"{name}.jpg")
    (tmp_path / "lbl").mkdir()
    for name in ("a", "c"):
        Image.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "lbl" / f"{name}.png")
    dataset = "tmp_hardening_unlabelled"
    meta = split_metadata(get_split("synthetic"))
    register_sem_seg_dataset(
        dataset, str(tmp_path / "img"), str(tmp_path / "lbl"), meta, replace=True
    )
    try:
        with pytest.raises(DatasetError, match=r"1 images without a label .*img/b\.jpg"):
            DatasetCatalog.get(dataset)
        opts = [*tiny_opts, "DATASETS.TRAIN", f"('{dataset}',)"]
        with pytest.raises(DatasetError, match=r"b\.jpg"):
            ChimeraSegTrainer.build_train_loader(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))
        logger = _capture("chimeraseg.data.io", caplog)
        try:
            dicts = dataset_dicts([dataset], skip_missing_labels=True)
            skip = [*opts, "DATASETS.SKIP_IMAGES_WITHOUT_LABEL", "True"]
            ChimeraSegTrainer.build_train_loader(get_chimeraseg_cfg(SYNTHETIC_CONFIG, skip))
        finally:
            logger.removeHandler(caplog.handler)
        assert [d["image_id"] for d in dicts] == ["a", "c"]
        assert "SKIPPED samples: 1 images without a label" in caplog.text
    finally:
        DatasetCatalog.remove(dataset)
        MetadataCatalog.remove(dataset)


# ----------------------------------------------------------------- item 4: EXIF orientation
def test_mapper_keeps_the_stored_pixel_grid_of_exif_images(tmp_path) -> None:
    from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper

    stored = _rotated_jpeg(tmp_path / "rotated.jpg", (6, 10))
    Image.fromarray(np.ones((6, 10), np.uint8)).save(tmp_path / "rotated.png")
    mapper = ZeroShotDatasetMapper(
        is_train=True, augmentations=[], num_classes=12, unseen_classes=[9]
    )
    out = mapper({"file_name": str(tmp_path / "rotated.jpg"),
                  "sem_seg_file_name": str(tmp_path / "rotated.png")})  # fmt: skip
    assert tuple(out["image"].shape) == (3, 6, 10) and tuple(out["sem_seg"].shape) == (6, 10)
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), stored)


# ---------------------------------------------- items 4 and 13: the demo's reader and its folder
def test_demo_skips_non_images_and_ignores_exif(tiny_opts, synthetic_root, tmp_path, capsys):
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    _rotated_jpeg(folder / "rotated.jpg", (48, 80))
    (folder / "notes.txt").write_text("not an image")
    demo = _demo()
    demo.main(["--config-file", SYNTHETIC_CONFIG, "--input", str(folder), "--output",
               str(tmp_path / "vis"), "--vocabulary", "grass,sky", "--allow-random-weights",
               *tiny_opts])  # fmt: skip
    out = capsys.readouterr().out
    assert "skipped" in out and "notes.txt" in out and "rotated.jpg" not in out
    overlay = cv2.imread(str(tmp_path / "vis" / "rotated.png"))
    assert overlay.shape[1] == 80  # the stored width; EXIF would make it 48
    assert not (tmp_path / "vis" / "notes.png").exists()


# ---------------------------------------------- items 10 and 11: kill, dying writer, --resume
def _metric_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def _kill_after_iteration(trainer, iteration: int) -> None:
    from detectron2.engine import HookBase

    class Kill(HookBase):
        def after_step(self):
            if self.trainer.iter == iteration:
                raise _Killed()

    trainer.register_hooks([Kill()])
    trainer.after_train = lambda: None  # a killed process runs no clean-up


def _dying_save(real_save):
    def dies_half_way(obj, f) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise _Killed()

    return dies_half_way


def test_kill_and_resume_keep_checkpoints_and_metrics(
    tiny_opts, synthetic_root, tmp_path, monkeypatch, caplog
):
    from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg
    from chimeraseg.utils import checkpoint_io

    out = tmp_path / "run"
    opts = [*tiny_opts, "OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "2", "SEED", "0"]
    first = ChimeraSegTrainer(get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "SOLVER.MAX_ITER", "4"]))
    first.resume_or_load(resume=False)
    _kill_after_iteration(first, 2)
    with pytest.raises(_Killed):
        first.train()
    assert [r["iteration"] for r in _metric_rows(out)] == [0, 1, 2]  # every row survived
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"

    # A writer killed half-way through the next checkpoint leaves the last good one in place.
    monkeypatch.setattr(checkpoint_io.torch, "save", _dying_save(torch.save))
    with pytest.raises(_Killed):
        first.checkpointer.save("model_0000002")
    monkeypatch.undo()
    assert not (out / "model_0000002.pth").exists()
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"

    # A truncated file tagged as the last checkpoint (a non-atomic writer): reported, skipped.
    good = (out / "model_0000001.pth").read_bytes()
    (out / "model_0000003.pth").write_bytes(good[: len(good) // 2])
    (out / "last_checkpoint").write_text("model_0000003.pth")
    resumed = ChimeraSegTrainer(
        get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "SOLVER.MAX_ITER", "3"])
    )
    logger = _capture("chimeraseg.d2.checkpoint", caplog)
    try:
        resumed.resume_or_load(resume=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert "model_0000003.pth' is not a checkpoint" in caplog.text
    assert resumed.start_iter == 2
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    resumed.train()
    rows = _metric_rows(out)
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1, 2]  # each once
    assert any(key.startswith("sem_seg/") for r in rows for key in r)  # final evaluation
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
