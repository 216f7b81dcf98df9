"""The world-CLIP cache: a damaged entry is an error giving the --retrain command, and a complete
entry is used without writing anything (a read-only cache works)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chimeraseg_test_utils import load_script

from chimeraseg.world.cache import WorldClipCacheError, ensure_world_clip
from chimeraseg.world.clip_training import WorldClipConfig

FAST = WorldClipConfig(
    model_config=str(Path(__file__).with_name("chimeraseg-world-vit-test.json")),
    steps=2,
    batch_size=8,
    pool_size=16,
    render_size=64,
    min_crop=48,
    held_out_per_class=2,
    min_mean_accuracy=0.0,
    min_class_accuracy=0.0,
)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A trained cache entry: ``(cache_dir, WorldClip)``."""
    cache_dir = tmp_path_factory.mktemp("world_cache")
    return cache_dir, ensure_world_clip(FAST, cache_dir=cache_dir, progress=False)


def test_truncated_checkpoint_is_not_reported_as_cached(cached, tmp_path) -> None:
    cache_dir, world = cached
    intact = world.checkpoint.read_bytes()
    try:
        world.checkpoint.write_bytes(intact[: len(intact) // 2])
        with pytest.raises(WorldClipCacheError, match=r"--retrain") as info:
            ensure_world_clip(FAST, cache_dir=cache_dir, progress=False)
        assert str(world.checkpoint) in str(info.value) and "checksum" in str(info.value)
    finally:
        world.checkpoint.write_bytes(intact)
    again = ensure_world_clip(FAST, cache_dir=cache_dir, progress=False)
    assert not again.trained_now


def test_damaged_entry_without_checksum_is_found_by_reading_it(cached) -> None:
    cache_dir, world = cached
    report_file = world.checkpoint.parent / "report.json"
    report_text, intact = report_file.read_text(), world.checkpoint.read_bytes()
    report = json.loads(report_text)
    del report["checkpoint_sha256"]  # as in entries written before the checksum
    try:
        report_file.write_text(json.dumps(report))
        world.checkpoint.write_bytes(intact[:200])
        with pytest.raises(WorldClipCacheError, match=r"truncated.*train_world_clip\.py"):
            ensure_world_clip(FAST, cache_dir=cache_dir, progress=False)
    finally:
        report_file.write_text(report_text)
        world.checkpoint.write_bytes(intact)


def test_complete_entry_is_used_without_opening_the_lock(cached) -> None:
    cache_dir, world = cached
    lock = world.checkpoint.parent / ".lock"
    lock.unlink()
    again = ensure_world_clip(FAST, cache_dir=cache_dir, progress=False)
    assert not again.trained_now and again.checkpoint == world.checkpoint
    assert not lock.exists()  # nothing was opened for writing


def test_unwritable_cache_that_must_train_says_so(tmp_path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(WorldClipCacheError, match=r"cannot be written.*CHIMERASEG_CACHE"):
        ensure_world_clip(FAST, cache_dir=blocker / "cache", progress=False)


def test_train_world_clip_tool_reports_a_damaged_cache(monkeypatch, capsys) -> None:
    tool = load_script("tools/train_world_clip.py", "chimeraseg_train_world_clip_damaged")

    def damaged(*args, **kwargs):
        raise WorldClipCacheError("cached world CLIP 'x.pt' is damaged; run ... --retrain")

    monkeypatch.setattr(tool, "ensure_world_clip", damaged)
    assert tool.main([]) == 1
    assert "--retrain" in capsys.readouterr().err
