"""Mix Transformer (MiT-B0...B5), the hierarchical SegFormer encoder, in plain PyTorch.

Module names are chosen so that ``state_dict()`` keys equal those of the official ImageNet
checkpoints ``mit_b0.pth ... mit_b5.pth`` (``patch_embed1.proj.weight``, ``block1.0.attn.q.weight``,
``block1.0.attn.kv.weight``, ``block1.0.attn.sr.weight``, ``block1.0.mlp.dwconv.dwconv.weight``,
``norm1.weight`` ...). The official files additionally hold an ImageNet classifier
``head.weight``/``head.bias``, which
:func:`chimeraseg.modeling.backbone.checkpoint.load_mit_checkpoint` drops.

Output sizes: for an input of H x W (any size >= :data:`MIN_INPUT_SIZE`) the stage-s map has
spatial size ``(ceil(H / s), ceil(W / s))`` for s in 4, 8, 16, 32. The stage-1 embedding conv
(k7, s4, p3) gives ``floor((H - 1) / 4) + 1 = ceil(H / 4)`` and each later one (k3, s2, p1) gives
``ceil(h / 2)`` of its input, and ``ceil(ceil(H / a) / b) = ceil(H / (a * b))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.modeling.backbone.layers import DropPath, linspace_drop_rates

STAGE_NAMES = ("res2", "res3", "res4", "res5")
STAGE_STRIDES = (4, 8, 16, 32)
# Stage 1 has 4x downsampling and a spatial-reduction ratio of 8, so its key/value grid is
# floor(ceil(H / 4) / 8); it must be >= 1, i.e. H >= 29 (later stages need less).
MIN_INPUT_SIZE = 29


@dataclass(frozen=True)
class MiTConfig:
    """Hyperparameters of one MiT variant (SegFormer paper and its official code)."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    decoder_dim: int = 768


_WIDE = (64, 128, 320, 512)
MIT_CONFIGS: dict[str, MiTConfig] = {
    "b0": MiTConfig(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=256),
    "b1": MiTConfig(embed_dims=_WIDE, depths=(2, 2, 2, 2), decoder_dim=256),
    "b2": MiTConfig(embed_dims=_WIDE, depths=(3, 4, 6, 3)),
    "b3": MiTConfig(embed_dims=_WIDE, depths=(3, 4, 18, 3)),
    "b4": MiTConfig(embed_dims=_WIDE, depths=(3, 8, 27, 3)),
    "b5": MiTConfig(embed_dims=_WIDE, depths=(3, 6, 40, 3)),
}


def get_mit_config(variant: str) -> MiTConfig:
    """Returns the hyperparameters of `variant` ("b0".."b5"; "mit_b4" is accepted too)."""
    key = variant.lower().removeprefix("mit_")
    if key not in MIT_CONFIGS:
        raise ValueError(f"Unknown MiT variant {variant!r}; expected one of {sorted(MIT_CONFIGS)}")
    return MIT_CONFIGS[key]


def mit_decoder_dim(variant: str) -> int:
    """SegFormer decoder width E for a MiT variant: 256 for B0/B1, 768 for B2-B5."""
    return get_mit_config(variant).decoder_dim


def _init_weights(module: nn.Module) -> None:
    """Initialisation of the official code: truncated normal linears, fan-out normal convs."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        fan_out //= module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (padding k // 2) followed by LayerNorm (eps 1e-5)."""

    def __init__(self, in_chans: int, embed_dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size, stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # official code: default eps here

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Maps `(B, C_in, H, W)` to tokens `(B, h*w, C)` and the grid size `h, w`."""
        x = self.proj(x)  # (B, C, h, w)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return self.norm(x), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a grid reduced `sr_ratio` times.

    With `sr_ratio > 1`, keys and values are computed from `LayerNorm(Conv_{k=s, stride=s}(x))`,
    so the key grid is `(floor(h / s), floor(w / s))`. Attention itself runs through
    :func:`torch.nn.functional.scaled_dot_product_attention` (exact, scale `1 / sqrt(d_head)`).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # official code: default eps here

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attends tokens `x` `(B, h*w, C)` of an `h x w` grid; returns `(B, h*w, C)`."""
        b, n, c = x.shape
        d = c // self.num_heads
        q = self.q(x).reshape(b, n, self.num_heads, d).transpose(1, 2)  # (B, heads, N, d)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
            reduced = self.sr(grid).flatten(2).transpose(1, 2)  # (B, M, C), M = h'w'
            kv_input = self.norm(reduced)
        else:
            kv_input = x
        m = kv_input.shape[1]
        kv = self.kv(kv_input).reshape(b, m, 2, self.num_heads, d)  # (B, M, 2, heads, d)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, M, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.proj(out)


class DWConv(nn.Module):
    """Depthwise 3x3 conv applied to a token sequence laid out on its grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Maps `(B, h*w, C)` to `(B, h*w, C)`."""
        b, n, c = x.shape
        grid = x.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        return self.dwconv(grid).flatten(2).transpose(1, 2)  # (B, h*w, C)


class MixFFN(nn.Module):
    """Mix-FFN: Linear -> depthwise 3x3 conv -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Maps `(B, h*w, C)` to `(B, h*w, C)`."""
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: efficient attention and Mix-FFN, each with stochastic depth."""

    def __init__(
        self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Maps tokens `(B, h*w, C)` to `(B, h*w, C)`."""
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixTransformer(nn.Module):
    """MiT encoder returning stride-4/8/16/32 maps `{"res2", "res3", "res4", "res5"}`.

    Attributes:
        variant: "b0".."b5".
        out_channels: Channels per output, e.g. B0 `{"res2": 32, ..., "res5": 256}`.
        out_strides: `{"res2": 4, "res3": 8, "res4": 16, "res5": 32}`.
    """

    def __init__(self, variant: str, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        cfg = get_mit_config(variant)
        self.variant = variant.lower().removeprefix("mit_")
        self.config = cfg
        rates = linspace_drop_rates(drop_path_rate, sum(cfg.depths))
        in_chans = 3
        for i, (dim, depth) in enumerate(zip(cfg.embed_dims, cfg.depths), start=1):
            kernel, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", OverlapPatchEmbed(in_chans, dim, kernel, stride))
            first = sum(cfg.depths[: i - 1])
            blocks = [
                MiTBlock(dim, cfg.num_heads[i - 1], cfg.sr_ratios[i - 1], cfg.mlp_ratio, r)
                for r in rates[first : first + depth]
            ]
            setattr(self, f"block{i}", nn.ModuleList(blocks))
            setattr(self, f"norm{i}", nn.LayerNorm(dim, eps=1e-6))
            in_chans = dim
        self.out_channels = dict(zip(STAGE_NAMES, cfg.embed_dims))
        self.out_strides = dict(zip(STAGE_NAMES, STAGE_STRIDES))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encodes an ImageNet-normalised batch.

        Args:
            x: `(B, 3, H, W)`, any `H, W >= MIN_INPUT_SIZE` (29).

        Returns:
            `{"res2": (B, C1, ceil(H/4), ceil(W/4)), "res3": (B, C2, ceil(H/8), ceil(W/8)),
            "res4": (B, C3, ceil(H/16), ceil(W/16)), "res5": (B, C4, ceil(H/32), ceil(W/32))}`.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"MixTransformer expects (B, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"MixTransformer input {tuple(x.shape[-2:])} is smaller than the minimum "
                f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (stage-1 spatial reduction needs 8 positions)"
            )
        outputs: dict[str, torch.Tensor] = {}
        for i, name in enumerate(STAGE_NAMES, start=1):
            x, h, w = getattr(self, f"patch_embed{i}")(x)  # (B, h*w, C)
            for block in getattr(self, f"block{i}"):
                x = block(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, C, h, w)
            outputs[name] = x
        return outputs


def build_mit(variant: str, drop_path_rate: float = 0.1) -> MixTransformer:
    """Builds a randomly initialised MiT encoder.

    Args:
        variant: "b0".."b5" (SegFormer's MiT-B0...B5).
        drop_path_rate: Largest stochastic-depth rate (linear from 0 over all blocks).

    Returns:
        A :class:`MixTransformer`; load ImageNet weights with `load_mit_checkpoint`.
    """
    return MixTransformer(variant, drop_path_rate=drop_path_rate)
