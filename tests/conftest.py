"""Shared fixtures: seeded RNG, tiny and full-shape random CLIP models, detectron2 skipping.

Random CLIP weights exist only here and wherever a caller passes ``allow_random_init=True``.
"""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch

HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
DETECTRON2_SKIP_REASON = (
    "detectron2 is not installed (it is not on package registries; see README.md, 'Install')"
)

# A CLIP with ViT-B/16's structure (patch 16, QuickGELU, ln_pre/ln_post, class token, proj) but
# tiny widths, so that building it and running it take milliseconds. The text tower keeps the real
# tokenizer's vocabulary and context length so open_clip's tokenizer works unchanged.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    "quick_gelu": True,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips tests marked ``@pytest.mark.detectron2`` with one clear reason when it is missing."""
    if HAS_DETECTRON2:
        return
    skip = pytest.mark.skip(reason=DETECTRON2_SKIP_REASON)
    for item in items:
        if "detectron2" in item.keywords:
            item.add_marker(skip)


def seed_everything(seed: int = 0) -> None:
    """Seeds Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- seeds code that still uses the global RNG
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def _seeded_rng() -> None:
    """Every test starts from the same RNG state, so failures reproduce."""
    seed_everything(0)


def build_tiny_clip(seed: int = 0) -> torch.nn.Module:
    """Builds the tiny random CLIP of ``TINY_CLIP_CONFIG``, frozen and in eval mode."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**TINY_CLIP_CONFIG).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def tiny_clip() -> torch.nn.Module:
    """A tiny random CLIP (open_clip custom config); shared, so tests must not modify it."""
    return build_tiny_clip()


@pytest.fixture(scope="session")
def vit_b16_clip() -> torch.nn.Module:
    """A random CLIP with the full ``ViT-B-16-quickgelu`` shapes (about 150M parameters)."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def detectron2():
    """The detectron2 module, or a skip with the standard reason."""
    return pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)
