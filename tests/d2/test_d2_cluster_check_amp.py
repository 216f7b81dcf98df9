"""The cluster check's AMP pseudo-mask phase on the CPU: capture, comparison and verdicts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from chimeraseg_test_utils import SYNTHETIC_CONFIG  # noqa: E402
from torch import nn  # noqa: E402

from chimeraseg.d2.cluster_check.amp_masks import (  # noqa: E402
    MIN_AGREEMENT,
    amp_assertions,
    amp_precisions,
    compare_pseudo_masks,
    pseudo_labels_of_step,
)

pytestmark = pytest.mark.detectron2


class _Criterion(nn.Module):
    def forward(self, outputs, iteration=0):
        return {"loss": outputs.pseudo_labels.float().mean()}


class _FakeModel(nn.Module):
    """Labels 0 (seen), 2 (latent) and 255; under autocast ``flip`` latent pixels become 255."""

    def __init__(self, flip: int) -> None:
        super().__init__()
        self.model = SimpleNamespace(criterion=_Criterion(), num_seen=2)
        self.flip = flip
        self.register_buffer("anchor", torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, batch):
        labels = torch.zeros(1, 4, 4, dtype=torch.long)
        labels[0, :2] = 2  # 8 latent pixels
        labels[0, 3, 3] = 255
        if torch.is_autocast_enabled("cpu"):
            labels.view(-1)[: self.flip] = 255
        return self.model.criterion(SimpleNamespace(pseudo_labels=labels))


def test_the_comparison_counts_differing_pixels() -> None:
    same = compare_pseudo_masks(_FakeModel(flip=0), [[{}], [{}]], ["bf16"])
    assert (same["pixels"], same["latent_pixels_fp32"]) == (32, 16)
    assert same["fp32_repeat"]["differing_pixels"] == 0
    assert same["precisions"]["bf16"] == {
        "agreement": 1.0, "latent_agreement": 1.0, "differing_pixels": 0
    }  # fmt: skip
    moved = compare_pseudo_masks(_FakeModel(flip=3), [[{}], [{}]], ["bf16"])
    assert moved["precisions"]["bf16"] == {
        "agreement": 26 / 32, "latent_agreement": 10 / 16, "differing_pixels": 6
    }  # fmt: skip


def _record(differing: int, repeat: int = 0, latent: int = 100, pixels: int = 10_000) -> dict:
    def entry(n: int) -> dict:
        return {"agreement": 1 - n / pixels, "latent_agreement": None, "differing_pixels": n}

    return {
        "latent_pixels_fp32": latent,
        "fp32_repeat": entry(repeat),
        "precisions": {"bf16": entry(differing)},
    }


def test_verdicts_compare_with_two_float32_runs_and_need_latent_regions() -> None:
    passing = amp_assertions([_record(0), _record(0)])
    assert [a["passed"] for a in passing] == [True, True]
    one_pixel_off = amp_assertions([_record(0), _record(1)])  # float32 repeats exactly
    assert [a["passed"] for a in one_pixel_off] == [True, False]
    assert "[0, 1]" in one_pixel_off[1]["detail"]
    noisy_gpu = amp_assertions([_record(4, repeat=2), _record(3, repeat=3)])  # atomics
    assert [a["passed"] for a in noisy_gpu] == [True, True]
    worse_than_noise = amp_assertions([_record(5, repeat=2), _record(0)])
    assert [a["passed"] for a in worse_than_noise] == [True, False]
    below_floor = amp_assertions([_record(40, repeat=20), _record(0)])  # 0.996 < MIN_AGREEMENT
    assert MIN_AGREEMENT > 0.996 and [a["passed"] for a in below_floor] == [True, False]
    vacuous = amp_assertions([_record(0, latent=0), _record(0)])
    assert [a["passed"] for a in vacuous] == [False, True]


def test_precisions_per_device() -> None:
    assert amp_precisions("cpu") == ["bf16"]  # CPU autocast: bfloat16 only


def test_real_training_forward_pseudo_labels_are_captured(tiny_opts, synthetic_root) -> None:
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    import chimeraseg.d2  # noqa: F401
    from chimeraseg.d2.config import get_chimeraseg_cfg
    from chimeraseg.d2.data import ZeroShotDatasetMapper

    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts)
    model = build_model(cfg).train()
    mapper = ZeroShotDatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get("synthetic_zs_train")[:2]]
    labels = pseudo_labels_of_step(model, batch, None)
    assert labels.shape == (2, 64, 64)
    again = pseudo_labels_of_step(model, batch, None)
    assert torch.equal(labels, again)  # deterministic: a fair reference for the comparison
    result = compare_pseudo_masks(model, [batch], ["bf16"])
    assert result["latent_pixels_fp32"] > 0
    assert 0.0 <= result["precisions"]["bf16"]["agreement"] <= 1.0
