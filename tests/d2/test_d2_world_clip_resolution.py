"""tools/train_net.py trains the synthetic config as written: it finds (or trains) the world CLIP
exactly as tools/run_demo.py and the demos do, through the one function that does it."""

from __future__ import annotations

from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG, load_script

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg.world.cache import WorldClip, WorldClipCacheError  # noqa: E402

pytestmark = pytest.mark.detectron2
CACHED = Path("/cache/world_clip/key/chimeraseg-world-vit.pt")


@pytest.fixture()
def cached_world(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []

    def fake_ensure(config, **kwargs):
        calls.append(config)
        return WorldClip(Path(config.model_config), CACHED, {"message": "gate ok"}, False)

    monkeypatch.setattr("chimeraseg.world.cache.ensure_world_clip", fake_ensure)
    return calls


def _setup(tmp_path: Path, extra: list[str] = ()):
    from detectron2.engine import default_argument_parser

    tn = load_script("tools/train_net.py", "chimeraseg_train_net_world_clip")
    args = default_argument_parser().parse_args(
        ["--config-file", SYNTHETIC_CONFIG, "OUTPUT_DIR", str(tmp_path / "out"), *extra]
    )
    return tn, tn.setup(args)


def test_train_net_uses_the_cached_world_clip(cached_world, tmp_path) -> None:
    tn, cfg = _setup(tmp_path)
    assert str(CACHED) == cfg.MODEL.CLIP.PRETRAINED and cfg.is_frozen()
    assert cached_world[0].classes == "all"
    log = (tmp_path / "out" / "log.txt").read_text()
    assert f"synthetic world's CLIP (from the cache: {CACHED})" in log
    written = (tmp_path / "out" / "config.yaml").read_text()
    assert str(CACHED) in written  # the run records the CLIP it trained with


def test_one_function_for_every_tool(cached_world, tmp_path) -> None:
    from chimeraseg.d2 import get_chimeraseg_cfg, predictor
    from chimeraseg.d2.world_clip import fill_world_clip

    tn, cfg = _setup(tmp_path)
    run_demo = load_script("tools/run_demo.py", "chimeraseg_run_demo_world_clip")
    demo_cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [])
    line = run_demo.resolve_clip(demo_cfg, run_demo.get_parser().parse_args([]))
    assert demo_cfg.MODEL.CLIP.PRETRAINED == cfg.MODEL.CLIP.PRETRAINED and "gate ok" in line
    assert tn.fill_world_clip is fill_world_clip and predictor.fill_world_clip is fill_world_clip


def test_explicit_weights_and_random_clip_are_kept(cached_world, tmp_path) -> None:
    _, cfg = _setup(tmp_path, ["MODEL.CLIP.PRETRAINED", "/my/world.pt"])
    assert cfg.MODEL.CLIP.PRETRAINED == "/my/world.pt"
    _, cfg = _setup(tmp_path, ["MODEL.CLIP.ALLOW_RANDOM_INIT", "True"])
    assert cfg.MODEL.CLIP.PRETRAINED == "" and not cached_world


def test_a_damaged_cache_names_the_retrain_command(monkeypatch, tmp_path) -> None:
    def damaged(config, **kwargs):
        raise WorldClipCacheError("cached world CLIP 'w.pt' is damaged; run ... --retrain")

    monkeypatch.setattr("chimeraseg.world.cache.ensure_world_clip", damaged)
    with pytest.raises(WorldClipCacheError, match="--retrain"):
        _setup(tmp_path)
