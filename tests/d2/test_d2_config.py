"""Config: every YAML merges and builds a model; unknown keys and bad values fail by name."""

from __future__ import annotations

import glob
import os
import re

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from pathlib import Path  # noqa: E402

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ALL_YAMLS = sorted(glob.glob(str(REPO / "configs" / "**" / "*.yaml"), recursive=True))


def test_configs_exist_for_every_setting_and_ablation_table():
    names = {os.path.relpath(p, REPO / "configs") for p in ALL_YAMLS}
    for dataset, sched in (("coco-stuff-164k-156", "80k"), ("pascal-context-59-49", "40k")):
        for model in ("mitb0", "mitb4", "vitb16"):
            assert f"{dataset}/chimeraseg_{model}_{sched}.yaml" in names
            assert f"{dataset}/chimeraseg_{model}_transductive_{sched}.yaml" in names
    tables = {os.path.basename(n)[:7] for n in names if "/ablations/" in n}
    assert tables == {f"table{i:02d}" for i in range(3, 13)}
    assert "synthetic/chimeraseg_mitb0_synthetic.yaml" in names


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: os.path.relpath(p, REPO / "configs"))
def test_every_yaml_merges_and_builds_a_model(path, tiny_opts, synthetic_root):
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model

    import chimeraseg.d2  # noqa: F401 -- registrations

    if os.path.basename(path).startswith("Base-"):
        cfg = get_chimeraseg_cfg(path, tiny_opts)
        assert cfg.MODEL.META_ARCHITECTURE == "ChimeraSeg"
        return
    cfg = get_chimeraseg_cfg(path, tiny_opts)
    model = build_model(cfg)
    assert len(model.train_vocabulary) == len(model.model.seen_ids) + len(model.model.unseen_ids)
    test_classes = MetadataCatalog.get(cfg.DATASETS.TEST[0]).stuff_classes  # cross-dataset too
    assert model.vocabulary == list(test_classes)
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"


def test_paper_settings_in_base_configs():
    cfg = get_chimeraseg_cfg(str(REPO / "configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml"))
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (16, 6e-5, 80000)
    assert (cfg.SOLVER.HEAD_MULTIPLIER, cfg.SOLVER.WARMUP_ITERS, cfg.TEST.GAMMA) == (
        10.0,
        1500,
        0.5,
    )
    assert (cfg.MODEL.CHIMERASEG.SGD.K_INIT, cfg.MODEL.CHIMERASEG.SAM.TAU_C) == (9000, None)
    ctx = get_chimeraseg_cfg(str(REPO / "configs/pascal-context-59-49/chimeraseg_mitb4_40k.yaml"))
    assert (ctx.SOLVER.MAX_ITER, ctx.TEST.GAMMA) == (40000, 0.0)


def test_unknown_yaml_key_fails_naming_the_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {REPO / 'configs/synthetic/chimeraseg_mitb0_synthetic.yaml'}\n"
                   "MODEL:\n  CHIMERASEG:\n    CSH:\n      NROM: BN\n")  # fmt: skip
    with pytest.raises(KeyError, match="MODEL.CHIMERASEG.CSH.NROM") as info:
        get_chimeraseg_cfg(str(bad))
    assert "bad.yaml" in str(info.value)


def test_unknown_command_line_key_fails_naming_the_key():
    with pytest.raises(KeyError, match="MODEL.CLIP.WEIGHTZ"):
        get_chimeraseg_cfg(None, ["MODEL.CLIP.WEIGHTZ", "x"])


@pytest.mark.parametrize(
    "key,value",
    [("TEST.MODE", "slid"), ("MODEL.CHIMERASEG.CSH.NORM", "BatchNorm"),
     ("MODEL.CHIMERASEG.SETTING", "zero-shot"), ("MODEL.CHIMERASEG.CSH.VENCODER_BLOCKS", "5")],
)  # fmt: skip
def test_bad_choice_fails_naming_key_and_value(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as info:
        get_chimeraseg_cfg(None, [key, value])
    assert value in str(info.value)


def test_inference_speed_keys_default_exact_and_are_validated():
    cfg = get_chimeraseg_cfg(None, [])
    assert cfg.TEST.CSH_DOWNSAMPLE == 1 and cfg.TEST.CSH_CHUNK_TOKENS == 1024
    for key, bad in (("TEST.CSH_DOWNSAMPLE", "0"), ("TEST.CSH_CHUNK_TOKENS", "-1")):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            get_chimeraseg_cfg(None, [key, bad])


def test_defaults_without_yaml_are_the_paper_settings():
    cfg = get_chimeraseg_cfg()
    assert cfg.MODEL.META_ARCHITECTURE == "ChimeraSeg" and cfg.INPUT.FORMAT == "RGB"
    assert list(cfg.MODEL.PIXEL_MEAN) == [123.675, 116.28, 103.53]
    assert cfg.SOLVER.BASE_LR == 6e-5 and cfg.SOLVER.WEIGHT_DECAY == 0.01
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR" and cfg.SOLVER.WARMUP_ITERS == 1500
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.MAX_ITER == 80000
    assert cfg.INPUT.CROP.ENABLED and tuple(cfg.INPUT.CROP.SIZE) == (512, 512)


def test_gamma_in_transductive_setting_fails_naming_both_keys():
    with pytest.raises(ValueError, match=r"TEST.GAMMA = 0.5.*MODEL.CHIMERASEG.SETTING"):
        get_chimeraseg_cfg(opts=["MODEL.CHIMERASEG.SETTING", "transductive", "TEST.GAMMA", "0.5"])
    cfg = get_chimeraseg_cfg(opts=["MODEL.CHIMERASEG.SETTING", "transductive"])
    assert cfg.TEST.GAMMA == 0.0


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("MODEL.CHIMERASEG.IGNORE_VALUE", "fixed at 255"),
        ("MODEL.CHIMERASEG.FOLD_PROJECTION", "folded-projection inference path was removed"),
    ],
)
def test_removed_keys_say_why(tmp_path, key, reason):
    escaped = re.escape(key)
    with pytest.raises(KeyError, match=rf"{escaped} was removed: .*{reason}"):
        get_chimeraseg_cfg(None, [key, "1"])
    leaf = key.rsplit(".", 1)[1]
    yaml = tmp_path / "old.yaml"
    yaml.write_text(f"MODEL:\n  CHIMERASEG:\n    {leaf}: 1\n")
    with pytest.raises(KeyError, match=rf"old\.yaml .*{leaf} was removed"):
        get_chimeraseg_cfg(str(yaml))
