"""detectron2 adapters of the student backbones: registry, output_shape, config keys, weights."""

from __future__ import annotations

import pytest
import torch
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402

from chimeraseg.d2.backbone import student_from_config  # noqa: E402 (registers the backbones)
from chimeraseg.d2.config import add_chimeraseg_config  # noqa: E402
from chimeraseg.modeling.backbone import build_mit  # noqa: E402

pytestmark = pytest.mark.detectron2


def _cfg(name: str, variant: str = "", out_features: list[str] | None = None):
    cfg = get_cfg()
    add_chimeraseg_config(cfg)
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.CHIMERASEG.BACKBONE.VARIANT = variant
    cfg.MODEL.CHIMERASEG.BACKBONE.DROP_PATH_RATE = 0.0
    if out_features is not None:
        cfg.MODEL.CHIMERASEG.BACKBONE.OUT_FEATURES = out_features
    return cfg


def test_mit_adapter_shapes_and_divisibility():
    backbone = build_backbone(_cfg("mit_b0"), ShapeSpec(channels=3))
    assert backbone.size_divisibility == 32
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (32, 4),
        "res3": (64, 8),
        "res4": (160, 16),
        "res5": (256, 32),
    }
    with torch.no_grad():
        out = backbone.eval()(torch.randn(1, 3, 64, 96))
    for name, spec in shapes.items():
        assert out[name].shape == (1, spec.channels, 64 // spec.stride, 96 // spec.stride)


def test_out_features_subset_and_validation():
    backbone = build_backbone(_cfg("mit_b0", "", ["res3", "res5"]))
    with torch.no_grad():
        assert list(backbone.eval()(torch.randn(1, 3, 64, 64))) == ["res3", "res5"]
    with pytest.raises(ValueError, match="OUT_FEATURES=\\['res6'\\]"):
        build_backbone(_cfg("mit_b0", "", ["res6"]))


def test_older_family_names_load_when_their_keys_agree():
    assert student_from_config(_cfg("D2MixTransformer", "b4")) == "mit_b4"
    assert student_from_config(_cfg("D2ViTB16", "vit_b16")) == "vit_b16"
    cfg = _cfg("mit_b4", "b4")
    cfg.MODEL.CHIMERASEG.DECODER.EMBED_DIM = 768
    assert student_from_config(cfg) == "mit_b4"


def test_variant_and_name_mismatch_are_reported():
    with pytest.raises(
        ValueError,
        match="VARIANT='vit_b16' does not fit MODEL.BACKBONE.NAME='D2MixTransformer'.*'vit_b16'",
    ):
        build_backbone(_cfg("D2MixTransformer", "vit_b16"))
    with pytest.raises(
        ValueError,
        match="VARIANT='b4' does not fit MODEL.BACKBONE.NAME='D2ViTB16'.*'mit_b4'",
    ):
        build_backbone(_cfg("D2ViTB16", "b4"))
    with pytest.raises(ValueError, match="VARIANT='b0' does not fit MODEL.BACKBONE.NAME='mit_b4'"):
        student_from_config(_cfg("mit_b4", "b0"))
    with pytest.raises(ValueError, match="names a family; set it to one backbone"):
        student_from_config(_cfg("D2MixTransformer"))
    cfg = _cfg("mit_b0")
    cfg.MODEL.CHIMERASEG.DECODER.EMBED_DIM = 768
    with pytest.raises(ValueError, match="EMBED_DIM=768 does not fit MODEL.BACKBONE.NAME='mit_b0'"):
        student_from_config(cfg)
    with pytest.raises(ValueError, match="Unknown student backbone 'mit_b9'"):
        student_from_config(_cfg("mit_b9"))


def test_vit_adapter_shapes():
    backbone = build_backbone(_cfg("vit_b16"))
    assert backbone.size_divisibility == 32
    assert {k: v.channels for k, v in backbone.output_shape().items()} == {
        "res2": 192,
        "res3": 384,
        "res4": 768,
        "res5": 768,
    }


def test_pretrained_weights_are_loaded_strictly(tmp_path):
    source = build_mit("b0")
    path = tmp_path / "mit_b0.pth"
    torch.save(source.state_dict(), path)
    cfg = _cfg("mit_b0")
    cfg.MODEL.CHIMERASEG.BACKBONE.PRETRAINED = str(path)
    backbone = build_backbone(cfg)
    assert torch.equal(backbone.body.block2[1].attn.kv.weight, source.block2[1].attn.kv.weight)
    cfg.MODEL.BACKBONE.NAME = "mit_b1"
    with pytest.raises(ValueError, match="looks like mit_b0"):
        build_backbone(cfg)
