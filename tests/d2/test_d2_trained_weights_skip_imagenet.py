"""A trained model never needs the ImageNet init: every tool runs with BACKBONE.PRETRAINED missing.

``MODEL.CHIMERASEG.BACKBONE.PRETRAINED`` points at a file that does not exist; building the model
still works wherever trained weights replace the init (``MODEL.WEIGHTS``, ``--resume`` with a
checkpoint), and still fails where the init is really needed (a fresh training).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402

pytestmark = pytest.mark.detectron2


@pytest.fixture(scope="module")
def missing_init(tmp_path_factory) -> list[str]:
    absent = tmp_path_factory.mktemp("imagenet") / "mit_b0_absent.pth"
    return ["MODEL.CHIMERASEG.BACKBONE.PRETRAINED", str(absent)]


@pytest.fixture(scope="module")
def trained_opts(tiny_opts, synthetic_root, missing_init, tmp_path_factory) -> list[str]:
    """``tiny_opts`` with a saved ChimeraSeg checkpoint as MODEL.WEIGHTS and the init missing."""
    from detectron2.modeling import build_model

    from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer
    from chimeraseg.d2.config import get_chimeraseg_cfg

    folder = tmp_path_factory.mktemp("trained")
    model = build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts))
    ChimeraSegCheckpointer(model, str(folder)).save("model_final")
    return [*tiny_opts, *missing_init, "MODEL.WEIGHTS", str(folder / "model_final.pth")]


def _assert_has_trained_weights(model, opts: list[str]) -> None:
    """Every weight of ``model`` equals the one of the checkpoint ``MODEL.WEIGHTS`` names."""
    import torch

    saved = torch.load(opts[opts.index("MODEL.WEIGHTS") + 1], weights_only=True)["model"]
    state = model.state_dict()
    assert saved and set(saved) <= set(state)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key


def _eval_args(extra: list[str]):
    from detectron2.engine import default_argument_parser

    return default_argument_parser().parse_args(["--config-file", SYNTHETIC_CONFIG, *extra])


def test_the_rule(tiny_opts, missing_init, tmp_path) -> None:
    from chimeraseg.d2.backbone import imagenet_init, without_replaced_imagenet_init
    from chimeraseg.d2.config import get_chimeraseg_cfg

    out = tmp_path / "run"
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, *missing_init, "OUTPUT_DIR", str(out)])
    assert imagenet_init(cfg) == missing_init[1]
    assert imagenet_init(cfg, resume=True) == missing_init[1]  # nothing to resume from yet
    assert without_replaced_imagenet_init(cfg, resume=True) is cfg
    out.mkdir()
    (out / "last_checkpoint").write_text("model_0000001.pth")
    assert imagenet_init(cfg) == missing_init[1]  # a checkpoint there, but no --resume
    assert imagenet_init(cfg, resume=True) == ""
    copy = without_replaced_imagenet_init(cfg, resume=True)
    assert copy.MODEL.CHIMERASEG.BACKBONE.PRETRAINED == "" and copy.is_frozen()
    assert missing_init[1] == cfg.MODEL.CHIMERASEG.BACKBONE.PRETRAINED  # what the run records
    cfg.MODEL.WEIGHTS = "trained.pth"
    assert imagenet_init(cfg) == ""


def test_a_fresh_model_still_needs_the_init(tiny_opts, missing_init) -> None:
    from detectron2.modeling import build_model

    from chimeraseg.d2.config import get_chimeraseg_cfg

    with pytest.raises(FileNotFoundError, match="mit_b0_absent.pth"):
        build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, *missing_init]))


@pytest.mark.parametrize("tta", [False, True], ids=["eval-only", "eval-only-tta"])
def test_eval_only(trained_opts, tmp_path, tta) -> None:
    tn = load_script("tools/train_net.py", "chimeraseg_train_net_skip_init")
    extra = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(64,)", "TEST.AUG.MAX_SIZE", "128"]
    extra = extra if tta else []
    opts = [*trained_opts, *extra, "OUTPUT_DIR", str(tmp_path / "eval")]
    results = tn.main(_eval_args(["--eval-only", *opts]))
    assert set(results["sem_seg"]) >= {"sIoU", "uIoU", "hIoU"}


def test_resume_and_eval_only_resume(tiny_opts, synthetic_root, missing_init, tmp_path) -> None:
    from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg

    tn = load_script("tools/train_net.py", "chimeraseg_train_net_skip_init_resume")
    out = str(tmp_path / "run")
    opts = [*tiny_opts, "OUTPUT_DIR", out, "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "0"]
    first = ChimeraSegTrainer(get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "SOLVER.MAX_ITER", "1"]))
    first.resume_or_load(resume=False)
    first.train()
    assert (Path(out) / "last_checkpoint").is_file()
    resumed = [*opts, *missing_init, "SOLVER.MAX_ITER", "2"]
    results = tn.main(_eval_args(["--eval-only", "--resume", *resumed]))
    assert "sIoU" in results["sem_seg"]
    tn.main(_eval_args(["--resume", *resumed]))
    assert (Path(out) / "model_final.pth").is_file()
    with pytest.raises(FileNotFoundError, match="mit_b0_absent.pth"):  # no --resume: a new run
        tn.main(_eval_args(resumed))


def test_demo_tool(trained_opts, synthetic_root, tmp_path) -> None:
    demo = load_script("tools/demo.py", "chimeraseg_demo_tool_skip_init")
    image = sorted((Path(synthetic_root) / "synthetic_zs" / "val2017").glob("*.jpg"))[0]
    out = tmp_path / "demo"
    demo.main(["--config-file", SYNTHETIC_CONFIG, "--input", str(image), "--output", str(out),
               "--vocabulary", "cat,grass,sky", *trained_opts])  # fmt: skip
    assert (out / f"{image.stem}.png").is_file()


def test_web_demo_source(trained_opts) -> None:
    from chimeraseg.d2.web_source import build_d2_source

    source = build_d2_source(SYNTHETIC_CONFIG, trained_opts, "trained")
    _assert_has_trained_weights(source.demo.model, trained_opts)


@pytest.mark.slow
def test_export(trained_opts, tmp_path) -> None:
    from chimeraseg.d2.export import export_from_config

    out = tmp_path / "export"
    export_from_config(SYNTHETIC_CONFIG, trained_opts, str(out))
    assert (out / "metadata.json").is_file()
