"""Start-up checks of the detectron2 layer: key ranges (pseudo masks, schedule, test-time bias),
custom label sets above 255 classes ignore 65535, resumed runs past SOLVER.MAX_ITER refused."""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

pytestmark = pytest.mark.detectron2


@pytest.mark.parametrize(("count", "ignore"), [(255, 255), (256, 65535), (300, 65535)])
def test_custom_set_ignore_value_follows_its_class_count(tmp_path, count, ignore) -> None:
    from detectron2.data import MetadataCatalog

    from chimeraseg.d2.data.register_custom import register_zero_shot_folders

    names = [f"class{i}" for i in range(count)]
    name = f"hardening_custom_{count}"
    register_zero_shot_folders(name, str(tmp_path), names, unseen=["class255"] if count > 255
                               else ["class1"], splits=["val"])  # fmt: skip
    assert MetadataCatalog.get(f"{name}_val").ignore_label == ignore


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "MODEL.CHIMERASEG.PSEUDO_MASKS.UNSEEN_THRESHOLD",
            "5.0",
            r"= 5\.0 must be in \[0\.0, 1\.0\]",
        ),
        (
            "MODEL.CHIMERASEG.PSEUDO_MASKS.MERGE_THRESHOLD",
            "9.0",
            r"= 9\.0 must be in \[-1\.0, 1\.0\]",
        ),
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.REGION_IGNORE_FRACTION", "-0.1", r"must be in \[0\.0"),
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.SEED_REGION_FRACTION", "1.5", r"must be in \[0\.0, 1\.0\]"),
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.UNSEEN_TEMPERATURE", "0.0", r"must be a finite number > 0"),
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.KMEANS_ITERS", "-1", r"= -1 must be >= 0"),
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.MIN_AREA", "-3", r"MIN_AREA = -3 must be >= 0"),
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.MAX_REGIONS", "-2", r"= -2 must be in \[-1, 254\]"),
        ("MODEL.CHIMERASEG.PSEUDO_MASKS.WINDOW_SCALES", "[4, 0]", r"\[4, 0\] must list positive"),
        ("SOLVER.MAX_ITER", "0", r"SOLVER\.MAX_ITER = 0 must be >= 1"),
        ("SOLVER.CHECKPOINT_PERIOD", "0", r"SOLVER\.CHECKPOINT_PERIOD = 0 must be >= 1"),
        ("SOLVER.BASE_LR", "0.0", r"SOLVER\.BASE_LR = 0\.0 must be > 0\.0"),
        ("TEST.GAMMA", "float('nan')", r"TEST\.GAMMA = nan must be a finite number"),
        ("TEST.GAMMA_SWEEP", "[0.0, float('inf')]", r"TEST\.GAMMA_SWEEP holds \[inf\]"),
    ],
)
def test_out_of_range_keys_fail_at_start_up_naming_them(key, value, message) -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg

    if "float(" in value:  # yacs parses literals only: set the non-literal after the merge
        from chimeraseg.d2.config_checks import validate_ranges

        cfg = get_chimeraseg_cfg()
        node, leaf = cfg, key.split(".")
        for part in leaf[:-1]:
            node = getattr(node, part)
        setattr(node, leaf[-1], eval(value))  # noqa: S307 -- a test literal
        with pytest.raises(ValueError, match=message):
            validate_ranges(cfg)
        return
    with pytest.raises(ValueError, match=message):
        get_chimeraseg_cfg(opts=[key, value])


def test_nan_gamma_from_a_yaml_fails_before_training(tmp_path) -> None:
    from chimeraseg_test_utils import SYNTHETIC_CONFIG

    from chimeraseg.d2 import get_chimeraseg_cfg

    config = tmp_path / "nan.yaml"
    config.write_text(f"_BASE_: {SYNTHETIC_CONFIG}\nTEST:\n  GAMMA: .nan\n")
    with pytest.raises(ValueError, match=r"TEST\.GAMMA = nan must be a finite number"):
        get_chimeraseg_cfg(str(config))


def test_resume_past_max_iter_is_an_error_not_a_finished_run(
    tiny_opts, synthetic_root, tmp_path
) -> None:
    from chimeraseg_test_utils import SYNTHETIC_CONFIG

    from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg
    from chimeraseg.utils.checkpoint_io import CheckpointError

    out = str(tmp_path / "run")
    opts = [*tiny_opts, "OUTPUT_DIR", out, "SOLVER.CHECKPOINT_PERIOD", "1", "SEED", "0",
            "TEST.EVAL_PERIOD", "0"]  # fmt: skip
    trainer = ChimeraSegTrainer(
        get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "SOLVER.MAX_ITER", "3"])
    )
    trainer.resume_or_load(resume=False)
    trainer.train()
    shorter = ChimeraSegTrainer(
        get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "SOLVER.MAX_ITER", "1"])
    )
    shorter.resume_or_load(resume=True)
    with pytest.raises(CheckpointError, match=r"at iteration 2, past SOLVER\.MAX_ITER = 1"):
        shorter.train()
    finished = ChimeraSegTrainer(
        get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "SOLVER.MAX_ITER", "3"])
    )
    finished.resume_or_load(resume=True)
    assert finished.start_iter == 3  # a finished run resumed at its end is not an error
