"""Layers shared by the student backbones: stochastic depth, LayerNorm2d, pos-embed resizing.

Implemented locally so the core package does not depend on timm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zeroes whole samples of a residual branch and rescales the rest.

    Args:
        x: Residual-branch output `(B, ...)`.
        drop_prob: Probability of dropping the branch for a sample, in `[0, 1)`.
        training: Whether the module is in training mode; identity otherwise.

    Returns:
        Tensor of the shape of `x`; each sample is either zero or `x / (1 - drop_prob)`.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # (B, 1, ..., 1): one draw per sample
    mask = x.new_empty(mask_shape).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (per-sample stochastic depth)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies stochastic depth to `x` `(B, ...)`; identity in eval mode."""
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map (as used by ViTDet's feature pyramid)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises `x` `(B, C, H, W)` over C at every position; returns `(B, C, H, W)`."""
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


def linspace_drop_rates(drop_path_rate: float, num_blocks: int) -> list[float]:
    """Stochastic-depth rates growing linearly from 0 to `drop_path_rate` over all blocks."""
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    if num_blocks <= 1:
        return [0.0] * num_blocks
    return [drop_path_rate * i / (num_blocks - 1) for i in range(num_blocks)]


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bicubically resizes a ViT position embedding with one leading class-token entry.

    Args:
        pos_embed: `(1, 1 + g*g, D)` for a square `g x g` pretraining grid.
        grid: Target `(gh, gw)`.

    Returns:
        `(1, 1 + gh*gw, D)`; the class-token entry is kept unchanged.
    """
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    num_patches = int(patch_pos.shape[1])
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"pos_embed has {num_patches} patch entries, not a square grid")
    grid = (int(grid[0]), int(grid[1]))  # plain ints also under tracing (fvcore)
    if grid == (side, side):
        return pos_embed
    dim = patch_pos.shape[-1]
    patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, g, g)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.flatten(2).transpose(1, 2)  # (1, gh*gw, D)
    return torch.cat([cls_pos, patch_pos], dim=1)
