"""`make demo` picks its CLIP: the world CLIP for the synthetic config, and says which and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, REPO, SYNTHETIC_CONFIG, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg.d2 import get_chimeraseg_cfg  # noqa: E402
from chimeraseg.world.cache import WorldClip  # noqa: E402

COCO_CONFIG = str(REPO / "configs" / "coco-stuff-164k-156" / "chimeraseg_mitb0_80k.yaml")


@pytest.fixture()
def run_demo(monkeypatch: pytest.MonkeyPatch):
    module = load_script("tools/run_demo.py", "chimeraseg_run_demo_tool")
    calls = []

    def fake_ensure(config, **kwargs):
        calls.append(config)
        return WorldClip(
            Path(config.model_config), Path("/cache/world.pt"), {"message": "gate ok"}, True
        )

    monkeypatch.setattr("chimeraseg.world.cache.ensure_world_clip", fake_ensure)
    module.calls = calls
    return module


def test_synthetic_config_uses_the_world_clip_by_default(run_demo) -> None:
    args = run_demo.get_parser().parse_args([])
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [])
    line = run_demo.resolve_clip(cfg, args)
    assert cfg.MODEL.CLIP.PRETRAINED == "/cache/world.pt"
    assert "synthetic world's CLIP" in line and "trained now" in line and "gate ok" in line
    assert run_demo.calls[0].classes == "all"


def test_explicit_choices_are_kept_and_named(run_demo) -> None:
    random_args = run_demo.get_parser().parse_args(["--allow-random-clip"])
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, run_demo.clip_opts(random_args))
    assert "RANDOM" in run_demo.resolve_clip(cfg, random_args)
    assert cfg.MODEL.CLIP.PRETRAINED == "" and not run_demo.calls
    real = get_chimeraseg_cfg(COCO_CONFIG, [])
    line = run_demo.resolve_clip(real, run_demo.get_parser().parse_args([]))
    assert real.MODEL.CLIP.PRETRAINED == "openai" and "ViT-B-16-quickgelu / openai" in line
