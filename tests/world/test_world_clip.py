"""World CLIP pieces: captions, seed namespaces, determinism, the gate, the cache, loading logs."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from chimeraseg_test_utils import load_script

from chimeraseg.clip.loading import load_clip, resolve_model_name
from chimeraseg.data.synthetic import render_sample
from chimeraseg.world.cache import ensure_world_clip, world_clip_key
from chimeraseg.world.clip_data import caption, render_pool, world_rng
from chimeraseg.world.clip_training import (
    WORLD_CLIP_MODEL_CONFIG,
    WorldClipConfig,
    WorldClipQualityError,
    train_world_clip,
    world_class_names,
)

TEST_CLIP_JSON = str(Path(__file__).with_name("chimeraseg-world-vit-test.json"))
# Seconds to train: the gate is switched off unless a test sets it.
FAST = WorldClipConfig(
    model_config=TEST_CLIP_JSON,
    steps=3,
    batch_size=8,
    pool_size=16,
    render_size=64,
    min_crop=48,
    held_out_per_class=2,
    min_mean_accuracy=0.0,
    min_class_accuracy=0.0,
)


def test_caption_names_each_present_class_once() -> None:
    rng = np.random.default_rng(0)
    text = caption(("grass", "sky", "brick wall"), [0, 2], "a photo of a {}.", rng)
    assert text in ("a photo of a grass and brick wall.", "a photo of a brick wall and grass.")
    assert caption(("grass",), [0], "{}", rng) == "grass"


def test_clip_images_are_not_segmentation_images() -> None:
    names = world_class_names("all")
    for i in range(4):
        for split in (0, 1):
            dataset_image, _ = render_sample(np.random.default_rng([0, split, i]), (32, 32), names)
            clip_image, _ = render_sample(world_rng(0, 0, i), (32, 32), names)
            assert not np.array_equal(dataset_image, clip_image)


def test_seen_only_world_has_no_unseen_class() -> None:
    seen = world_class_names("seen")
    assert len(seen) == 9 and not {"water", "tree", "carpet"} & set(seen)
    pool = render_pool(seen, 32, 6, seed=0, single_class_fraction=0.5)
    assert pool.names == seen and pool.labels[pool.labels != 255].max() < len(seen)


def test_training_is_deterministic_for_a_seed() -> None:
    first, _ = train_world_clip(FAST, progress=False)
    second, _ = train_world_clip(FAST, progress=False)
    other, _ = train_world_clip(dataclasses.replace(FAST, seed=1), progress=False)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cache_trains_once_and_loads_like_any_checkpoint(tmp_path, caplog) -> None:
    first = ensure_world_clip(FAST, cache_dir=tmp_path, progress=False)
    again = ensure_world_clip(FAST, cache_dir=tmp_path, progress=False)
    assert first.trained_now and not again.trained_now
    assert again.checkpoint == first.checkpoint and again.report == first.report
    assert first.report["gate"]["classes"] == list(world_class_names("all"))
    longer = dataclasses.replace(FAST, steps=4)
    assert world_clip_key(longer) != world_clip_key(FAST)
    with caplog.at_level(logging.INFO):
        model = load_clip(str(first.model_config), str(first.checkpoint))
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(first.checkpoint) in m and "loaded weights file" in m for m in messages)
    assert not any("initialized randomly" in m for m in messages)
    assert model.visual.proj.shape == (128, 64)
    # The temperature tools/train_world_clip.py prints is the loaded CLIP's own.
    tool = load_script("tools/train_world_clip.py")
    expected = 1.0 / model.logit_scale.exp().item()
    assert tool.learned_temperature(first.checkpoint) == pytest.approx(expected, rel=1e-6)


def test_gate_failure_names_the_classes_and_caches_nothing(tmp_path) -> None:
    strict = dataclasses.replace(FAST, steps=1, min_mean_accuracy=1.0, min_class_accuracy=1.0)
    with pytest.raises(WorldClipQualityError, match="FAILING: .*grass|FAILING: .*sky"):
        ensure_world_clip(strict, cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.pt"))


def test_model_config_json_resolves_from_any_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_model_name(WORLD_CLIP_MODEL_CONFIG) == "chimeraseg-world-vit"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        resolve_model_name("configs/clip/missing.json")


def test_config_rejects_unknown_class_set() -> None:
    with pytest.raises(ValueError, match="classes='unseen'"):
        WorldClipConfig(classes="unseen")
