"""Shared fixtures: seeded RNG, tiny and full-shape random CLIP models, detectron2 skipping.

Random CLIP weights exist only here and wherever a caller passes ``allow_random_init=True``.
"""

from __future__ import annotations

import os

import pytest
import torch
from chimeraseg_test_utils import (
    DETECTRON2_SKIP_REASON,
    HAS_DETECTRON2,
    REQUIRE_DETECTRON2_ENV,
    build_tiny_clip,
    seed_everything,
)

CUDA_SKIP_REASON = "needs a CUDA device (bash tools/gpu_suite.sh runs these on a GPU)"


def pytest_configure(config: pytest.Config) -> None:
    """With ``CHIMERASEG_REQUIRE_DETECTRON2=1`` (CI's second pass) a missing detectron2 is an error.

    Otherwise the detectron2 tests would skip and the run would look green without them.
    """
    if os.environ.get(REQUIRE_DETECTRON2_ENV) == "1" and not HAS_DETECTRON2:
        raise pytest.UsageError(f"{REQUIRE_DETECTRON2_ENV}=1 but {DETECTRON2_SKIP_REASON}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips tests marked ``@pytest.mark.detectron2`` with one clear reason when it is missing,
    and tests marked ``@pytest.mark.cuda`` without a CUDA device (tools/gpu_suite.sh runs them)."""
    skip_d2 = pytest.mark.skip(reason=DETECTRON2_SKIP_REASON)
    skip_cuda = pytest.mark.skip(reason=CUDA_SKIP_REASON)
    cuda = torch.cuda.is_available()
    for item in items:
        if not HAS_DETECTRON2 and "detectron2" in item.keywords:
            item.add_marker(skip_d2)
        if not cuda and item.get_closest_marker("cuda") is not None:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seeded_rng() -> None:
    """Every test starts from the same RNG state, so failures reproduce."""
    seed_everything(0)


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
