"""ViT-B/16 student backbone with a ViTDet-style simple feature pyramid, in plain PyTorch.

The plain ViT lives in ``self.vit`` with timm's ``vit_base_patch16_224`` names (``cls_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.attn.qkv`` ..., ``norm``), so
:func:`chimeraseg.modeling.backbone.checkpoint.load_vit_checkpoint` loads a timm/ImageNet state
dict strictly into it. The pyramid (``self.pyramid``) is new and randomly initialised.

Any input size: the image is zero-padded at the bottom/right to a multiple of 16 (zero is the
mean colour after ImageNet normalisation), giving a ``ceil(H/16) x ceil(W/16)`` token grid whose
learnable position embedding is bicubically resized from the 14 x 14 pretraining grid. The
pyramid outputs are cropped to ``(ceil(H / s), ceil(W / s))`` for s in 4, 8, 16, 32, the same
sizes as the MiT backbone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.modeling.backbone.layers import (
    DropPath,
    LayerNorm2d,
    linspace_drop_rates,
    resize_pos_embed,
)

PATCH_SIZE = 16


class PatchEmbed(nn.Module):
    """Non-overlapping 16x16 patch projection."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, PATCH_SIZE, PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps `(B, 3, H, W)` (H, W multiples of 16) to `(B, D, H/16, W/16)`."""
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps tokens `(B, N, D)` to `(B, N, D)`."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))  # (B, N, D)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps `(..., D)` to `(..., D)`."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, as timm's ViT)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps `(B, N, D)` to `(B, N, D)`."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """Plain ViT encoder with a class token; state-dict keys as timm's (without `head`)."""

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: int = 4,
        pretrain_img_size: int = 224,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        grid = pretrain_img_size // PATCH_SIZE
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        rates = linspace_drop_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes `(B, 3, H, W)` (H, W multiples of 16) to a map `(B, D, H/16, W/16)`.

        The class token takes part in attention and is dropped after the final LayerNorm.
        """
        x = self.patch_embed(x)  # (B, D, gh, gw)
        b, d, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, gh*gw, D)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)  # (B, 1 + gh*gw, D)
        x = x + resize_pos_embed(self.pos_embed, (gh, gw))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)[:, 1:]  # (B, gh*gw, D): class token dropped
        return x.transpose(1, 2).reshape(b, d, gh, gw)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet simple pyramid: from one stride-16 map to strides 4, 8, 16, 32.

    res2: deconv 2x (D -> D/2), LayerNorm2d, GELU, deconv 2x (D/2 -> D/4); res3: deconv 2x
    (D -> D/2); res4: identity; res5: 2x2 max-pool (ceil mode). The SegFormer decoder's per-level
    linear projections follow, so no extra per-level convs are added here.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scales = nn.ModuleDict(
            {
                "res2": nn.Sequential(
                    nn.ConvTranspose2d(dim, dim // 2, 2, 2),
                    LayerNorm2d(dim // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2),
                ),
                "res3": nn.ConvTranspose2d(dim, dim // 2, 2, 2),
                "res4": nn.Identity(),
                "res5": nn.MaxPool2d(2, 2, ceil_mode=True),
            }
        )
        self.out_channels = {"res2": dim // 4, "res3": dim // 2, "res4": dim, "res5": dim}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps `(B, D, h, w)` to `{"res2": (B, D/4, 4h, 4w), "res3": (B, D/2, 2h, 2w),
        "res4": (B, D, h, w), "res5": (B, D, ceil(h/2), ceil(w/2))}`."""
        return {name: op(x) for name, op in self.scales.items()}


class ViTB16Backbone(nn.Module):
    """ViT-B/16 + simple feature pyramid with the four-stride output of the MiT backbones.

    Attributes:
        out_channels: `{"res2": 192, "res3": 384, "res4": 768, "res5": 768}`.
        out_strides: `{"res2": 4, "res3": 8, "res4": 16, "res5": 32}`.
    """

    def __init__(self, drop_path_rate: float = 0.1, pretrain_img_size: int = 224) -> None:
        super().__init__()
        self.vit = VisionTransformer(
            pretrain_img_size=pretrain_img_size, drop_path_rate=drop_path_rate
        )
        self.pyramid = SimpleFeaturePyramid(self.vit.embed_dim)
        self.out_channels = dict(self.pyramid.out_channels)
        self.out_strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encodes an ImageNet-normalised batch of any size.

        Args:
            x: `(B, 3, H, W)`.

        Returns:
            `{"res2": (B, 192, ceil(H/4), ceil(W/4)), "res3": (B, 384, ceil(H/8), ceil(W/8)),
            "res4": (B, 768, ceil(H/16), ceil(W/16)), "res5": (B, 768, ceil(H/32), ceil(W/32))}`.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ViTB16Backbone expects (B, 3, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % PATCH_SIZE, (-width) % PATCH_SIZE
        x = F.pad(x, (0, pad_w, 0, pad_h))  # (B, 3, 16*ceil(H/16), 16*ceil(W/16))
        features = self.pyramid(self.vit(x))
        return {
            name: f[..., : math.ceil(height / s), : math.ceil(width / s)]
            for (name, f), s in zip(features.items(), self.out_strides.values())
        }


def build_vit_b16(drop_path_rate: float = 0.1, pretrain_img_size: int = 224) -> ViTB16Backbone:
    """Builds a randomly initialised ViT-B/16 student backbone (patch 16, 12 layers, width 768).

    Args:
        drop_path_rate: Largest stochastic-depth rate (linear from 0 over the 12 blocks).
        pretrain_img_size: Image size of the weights to be loaded; sets the stored position
            embedding grid (224 -> 14 x 14 + class token, timm's `vit_base_patch16_224`).

    Returns:
        A :class:`ViTB16Backbone`; load weights with `load_vit_checkpoint(model, path)`.
    """
    return ViTB16Backbone(drop_path_rate=drop_path_rate, pretrain_img_size=pretrain_img_size)
