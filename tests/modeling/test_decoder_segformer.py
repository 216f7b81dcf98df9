"""SegFormer decoder against an explicit re-computation, plus its input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chimeraseg.modeling.decoder import SegFormerDecoder

CHANNELS = {"res2": 4, "res3": 6, "res4": 10, "res5": 12}
SIZES = {"res2": (13, 16), "res3": (7, 8), "res4": (4, 4), "res5": (2, 2)}


def _features(batch: int = 2) -> dict[str, torch.Tensor]:
    return {k: torch.randn(batch, CHANNELS[k], *SIZES[k]) for k in CHANNELS}


def _randomise(decoder: SegFormerDecoder) -> None:
    with torch.no_grad():
        decoder.fuse_bn.running_mean.normal_()
        decoder.fuse_bn.running_var.uniform_(0.5, 2.0)
        decoder.fuse_bn.weight.normal_()
        decoder.fuse_bn.bias.normal_()


def test_matches_explicit_segformer_fusion_in_eval():
    decoder = SegFormerDecoder(CHANNELS, embed_dim=8, dropout=0.1).eval()
    _randomise(decoder)
    features = _features()
    projected = []
    for name in ["res5", "res4", "res3", "res2"]:  # SegFormer's concat order: coarsest first
        lin = decoder.linear[name]
        x = torch.einsum("bchw,ec->behw", features[name], lin.weight)
        x = x + lin.bias[None, :, None, None]
        projected.append(F.interpolate(x, size=(13, 16), mode="bilinear", align_corners=False))
    fused = F.conv2d(torch.cat(projected, 1), decoder.fuse_conv.weight)
    bn = decoder.fuse_bn
    fused = (fused - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var + bn.eps)[
        :, None, None
    ]
    expected = torch.relu(fused * bn.weight[:, None, None] + bn.bias[:, None, None])
    with torch.no_grad():
        out = decoder(features)
    assert out.shape == (2, 8, 13, 16)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert decoder.fuse_conv.bias is None
    assert decoder.in_features == ["res5", "res4", "res3", "res2"]


def test_dropout2d_zeroes_whole_channels_in_training():
    decoder = SegFormerDecoder(CHANNELS, embed_dim=64, dropout=0.5).train()
    out = decoder(_features())
    flat = out.flatten(2)  # (B, E, h*w)
    dropped = (flat == 0).all(-1)
    assert dropped.any() and not dropped.all()


def test_missing_feature_and_bad_names_are_reported():
    decoder = SegFormerDecoder(CHANNELS, embed_dim=8, dropout=0.1)
    features = _features()
    del features["res4"]
    with pytest.raises(KeyError, match="res4"):
        decoder(features)
    with pytest.raises(ValueError, match="stage4"):
        SegFormerDecoder({"res2": 4, "stage4": 8}, embed_dim=8, dropout=0.1)


def test_inference_folds_the_fuse_conv_into_the_projections_exactly():
    decoder = SegFormerDecoder(CHANNELS, embed_dim=8, dropout=0.1).eval()
    _randomise(decoder)
    features = _features()
    with torch.no_grad():
        folded = decoder(features)  # no autograd: the folded path
    unfolded = decoder(features).detach()  # autograd: concatenation + 1x1 conv
    assert folded.shape == unfolded.shape == (2, 8, 13, 16)
    assert torch.allclose(folded, unfolded, atol=1e-5, rtol=1e-5)
    assert not torch.equal(folded, torch.zeros_like(folded))
