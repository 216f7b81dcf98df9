"""SegFormer's all-MLP decoder without its classifier: fuses four stages into one stride-4 map.

Per stage: a Linear (a 1x1 projection) C_i -> E; bilinear upsampling (align_corners=False) to the
size of the finest map (res2); concatenation in SegFormer's order, coarsest first
(res5, res4, res3, res2) so the fuse weights line up with the official head's; a 1x1 conv
(no bias) 4E -> E, BatchNorm, ReLU; Dropout2d(0.1).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

_LEVEL_NAME = re.compile(r"^res(\d+)$")


def _coarse_to_fine(names: list[str]) -> list[str]:
    """Orders level names "resN" by decreasing N (coarsest first)."""
    bad = [n for n in names if not _LEVEL_NAME.match(n)]
    if bad:
        raise ValueError(f"SegFormerDecoder: feature names must look like 'resN', got {bad}")
    return sorted(names, key=lambda n: -int(n[3:]))


class SegFormerDecoder(nn.Module):
    """All-MLP decoder of SegFormer producing `E` channels at the finest input stride.

    Args:
        in_channels: Channels per input level, e.g. `{"res2": 32, "res3": 64, "res4": 160,
            "res5": 256}` (MiT-B0).
        embed_dim: Output channels E (256 for MiT-B0/B1, 768 for B2-B5 and ViT-B).
        dropout: Dropout2d probability applied to the fused map.
    """

    def __init__(self, in_channels: dict[str, int], embed_dim: int, dropout: float) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("SegFormerDecoder: in_channels is empty")
        self.in_features = _coarse_to_fine(list(in_channels))  # concat order, e.g. res5..res2
        self.embed_dim = embed_dim
        self.linear = nn.ModuleDict(
            {name: nn.Linear(in_channels[name], embed_dim) for name in self.in_features}
        )
        self.fuse_conv = nn.Conv2d(len(self.in_features) * embed_dim, embed_dim, 1, bias=False)
        self.fuse_bn = nn.BatchNorm2d(embed_dim)
        self.fuse_act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fuses a multi-scale feature dict.

        Args:
            features: `{"res2": (B, C1, h, w), "res3": (B, C2, h3, w3), ...}`; extra keys ignored.

        Returns:
            `(B, E, h, w)`, at the spatial size of the finest level (res2: ~H/4 x W/4).
        """
        missing = [n for n in self.in_features if n not in features]
        if missing:
            raise KeyError(f"SegFormerDecoder: missing features {missing}; got {list(features)}")
        size = features[self.in_features[-1]].shape[-2:]  # finest level's (h, w)
        if not torch.is_grad_enabled():
            fused = self._folded_fuse(features, size)  # (B, E, h, w)
        else:
            projected = []
            for name in self.in_features:
                x = features[name].permute(0, 2, 3, 1)  # (B, h_i, w_i, C_i)
                x = self.linear[name](x).permute(0, 3, 1, 2)  # (B, E, h_i, w_i)
                if x.shape[-2:] != size:
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                projected.append(x)  # (B, E, h, w)
            fused = self.fuse_conv(torch.cat(projected, dim=1))  # (B, 4E, h, w) -> (B, E, h, w)
        return self.dropout(self.fuse_act(self.fuse_bn(fused)))

    def _folded_fuse(self, features: dict[str, torch.Tensor], size: torch.Size) -> torch.Tensor:
        """The fuse conv folded into each level's projection (inference; exact up to rounding).

        The 1x1 fuse conv is linear per pixel and bilinear upsampling is a per-channel weighted
        average with weights summing to 1, so ``W @ cat_i(up(L_i x_i + b_i)) = sum_i up(W_i L_i
        x_i + W_i b_i)``: each level is projected once, at its own resolution, straight to E
        channels; the (B, 4E, h, w) concatenation and the 1x1 conv over it (a quarter of
        MiT-B0's eager time at 512x512) disappear.

        Returns:
            ``(B, E, h, w)``, the fuse conv's output.
        """
        levels = len(self.in_features)
        weight = self.fuse_conv.weight.view(self.embed_dim, levels, self.embed_dim)  # (E, L, E)
        fused = None
        for k, name in enumerate(self.in_features):
            linear, w_k = self.linear[name], weight[:, k]  # (E, E) slice of the fuse conv
            # F.linear, not a matrix-vector product: fvcore's FLOP counter takes only 2-D matmuls
            bias = F.linear(linear.bias, w_k) if linear.bias is not None else None  # (E,)
            x = features[name].permute(0, 2, 3, 1)  # (B, h_i, w_i, C_i)
            x = F.linear(x, w_k @ linear.weight, bias).permute(0, 3, 1, 2)  # (B, E, h_i, w_i)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            fused = x if fused is None else fused + x
        return fused
