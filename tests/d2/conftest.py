"""Fixtures of the detectron2-layer tests: a tiny random CLIP config and a synthetic dataset."""

from __future__ import annotations

import json
import os

import pytest
from chimeraseg_test_utils import TINY_CLIP_CONFIG


@pytest.fixture(scope="session")
def tiny_clip_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny CLIP as an open_clip model-config JSON (MODEL.CLIP.NAME accepts such a path)."""
    config = TINY_CLIP_CONFIG
    # 3 vision blocks so that the VEncoder ablation with 3 blocks (Table VIII) can be built.
    config = {**config, "vision_cfg": {**config["vision_cfg"], "layers": 3}}
    path = tmp_path_factory.mktemp("clip") / "chimeraseg_test_tiny_clip.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small synthetic dataset registered as ``synthetic_zs_{train,val}`` under a tmp root."""
    from chimeraseg.data.synthetic import make_synthetic_dataset

    root = str(tmp_path_factory.mktemp("datasets"))
    make_synthetic_dataset(root, num_train=6, num_val=3)
    os.environ["DETECTRON2_DATASETS"] = root
    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs

    register_all_synthetic_zs(root, replace=True)
    return root


@pytest.fixture(scope="session")
def tiny_opts(tiny_clip_json: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides for fast CPU tests: tiny random CLIP, single template, small crops/batches."""
    cache = str(tmp_path_factory.mktemp("text_cache"))
    return [
        "MODEL.CLIP.NAME", tiny_clip_json,
        "MODEL.CLIP.PRETRAINED", "",
        "MODEL.CLIP.ALLOW_RANDOM_INIT", "True",
        "MODEL.CLIP.TEXT_TEMPLATES", "single",
        "MODEL.CLIP.TEXT_CACHE_DIR", cache,
        "MODEL.CHIMERASEG.BACKBONE.PRETRAINED", "",
        "MODEL.DEVICE", "cpu",
        "SOLVER.IMS_PER_BATCH", "2",
        "INPUT.CROP.SIZE", "(64, 64)",
        "DATALOADER.NUM_WORKERS", "0",
        "TEST.GAMMA_SWEEP", "[0.0, 1.0]",
    ]  # fmt: skip
