"""CLIP Semantic Head (CSH, paper §III-B and Fig. 3).

Per pixel, on channel-last tokens (contiguous GEMMs, no per-layer permutes)::

    Fp   = MLP(F)                  trainable, E -> Dv (1 layer, or Linear-GELU-Linear)
    Fv   = VEncoder(Fp)            frozen value path of CLIP's last block(s)
    Fbn  = Norm(Fv)                BN (default) | GN | LN_clip (frozen ln_post) | LN | none
    Fres = Fp + Fbn                (Fbn when residual=False)
    Fc   = Fres @ proj             CLIP visual.proj, Dv -> D (frozen | learnable | he)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from chimeraseg.clip.partial import (
    build_ln_post,
    build_vencoder,
    build_visual_projection,
    keep_frozen_in_eval,
)

if TYPE_CHECKING:
    from chimeraseg.modeling.settings import HeadSettings

__all__ = [
    "CLIPSemanticHead",
    "ChannelLastBatchNorm",
    "ChannelLastGroupNorm",
    "DEFAULT_CHUNK_TOKENS",
    "NORM_TYPES",
    "PROJ_TYPES",
    "RowMap",
]

DEFAULT_CHUNK_TOKENS = 1024  # positions per CSH chunk at inference (FFN intermediate ~12 MB)

# Maps ``Fres`` rows ``(..., Dv)`` to per-position outputs ``(..., K)`` (any leading shape).
RowMap = Callable[[torch.Tensor], torch.Tensor]

NORM_TYPES = ("BN", "GN", "LN_clip", "LN", "none")
PROJ_TYPES = ("frozen", "learnable", "he")


class ChannelLastBatchNorm(nn.Module):
    """BatchNorm over the last dim of ``(..., C)`` tokens.

    Statistics are taken over every leading position, i.e. identical to ``nn.BatchNorm2d`` on the
    ``(B, C, h, w)`` layout. The inner ``bn`` is a plain ``nn.BatchNorm1d`` fed ``(N, C)`` rows, so
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` can replace it by a SyncBN that still receives
    ``(N, C)`` input (converting this wrapper itself would break the channel-last reshape).

    Args:
        num_features: ``C``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises ``x (..., C)``; returns the same shape."""
        return self.bn(x.reshape(-1, x.shape[-1])).view(x.shape)  # (N, C) rows


class ChannelLastGroupNorm(nn.GroupNorm):
    """GroupNorm on ``(B, ..., C)`` tokens, numerically ``nn.GroupNorm`` on ``(B, C, ...)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises ``x (B, ..., C)`` per image and channel group; returns the same shape."""
        b, c, g = x.shape[0], x.shape[-1], self.num_groups
        grouped = x.reshape(b, -1, g, c // g)  # (B, L, G, C/G)
        var, mean = torch.var_mean(grouped, dim=(1, 3), keepdim=True, unbiased=False)
        out = ((grouped - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        return out * self.weight + self.bias if self.affine else out


def _build_norm(norm: str, clip_visual: nn.Module, width: int) -> nn.Module:
    if norm == "BN":
        return ChannelLastBatchNorm(width)
    if norm == "GN":
        return ChannelLastGroupNorm(32, width)  # 32 groups: the paper gives no number
    if norm == "LN_clip":
        return build_ln_post(clip_visual, trainable=False)
    if norm == "LN":
        return nn.LayerNorm(width)  # fresh init (Table IX "LN(learn)")
    return nn.Identity()


class CLIPSemanticHead(nn.Module):
    """Projects student features into CLIP's joint space through partial CLIP.

    Submodules: ``mlp``, ``vencoder``, ``norm``, ``proj``. Frozen CLIP copies keep
    ``requires_grad=False`` and stay in eval mode under ``train()``.

    Args:
        in_channels: ``E``, channels of the student feature map.
        clip_visual: ``CLIP.visual`` whose last block(s), ``ln_post`` and ``proj`` are copied.
        settings: MLP depth, VEncoder blocks and branches, norm, residual and projection
            (Tables IV-IX; checked when the settings are made).
    """

    def __init__(self, in_channels: int, clip_visual: nn.Module, settings: HeadSettings) -> None:
        super().__init__()
        s = settings
        self.vencoder = build_vencoder(
            clip_visual,
            num_blocks=s.vencoder_blocks,
            use_value=s.use_value,
            use_ffn=s.use_ffn,
            trainable_value=s.trainable_value,
            trainable_ffn=s.trainable_ffn,
        )
        width = self.vencoder.width
        if s.norm == "GN" and width % 32 != 0:
            raise ValueError(f"CLIPSemanticHead: norm='GN' needs Dv % 32 == 0; Dv = {width}")
        layers: list[nn.Module] = [nn.Linear(in_channels, width)]
        if s.mlp_layers == 2:
            layers += [nn.GELU(), nn.Linear(width, width)]
        self.mlp = nn.Sequential(*layers)
        self.norm = _build_norm(s.norm, clip_visual, width)
        self.proj = build_visual_projection(clip_visual, trainable=s.proj != "frozen")
        if s.proj == "he":
            self.proj.reset_parameters_he()
        self.in_channels = in_channels
        self.width = width
        self.embed_dim = self.proj.embed_dim
        self.residual = s.residual
        self.norm_type = s.norm
        self.proj_type = s.proj

    def frozen_clip_modules(self) -> dict[str, nn.Module]:
        """Submodules holding frozen CLIP copies (name -> module), for checkpoint filtering."""
        out: dict[str, nn.Module] = {"vencoder": self.vencoder}
        if self.proj_type == "frozen":
            out["proj"] = self.proj
        if self.norm_type == "LN_clip":
            out["norm"] = self.norm
        return out

    def train(self, mode: bool = True) -> CLIPSemanticHead:
        """Sets train mode; frozen CLIP copies stay in eval mode."""
        return keep_frozen_in_eval(super().train(mode))

    def chunking_allowed(self) -> bool:
        """Whether chunking over positions is exact now: no autograd, per-position norm.

        BN in training mode and GN take statistics over all positions, so splitting the
        positions would change the result; with gradients enabled the whole graph is kept anyway.
        """
        if torch.is_grad_enabled() or self.norm_type == "GN":
            return False
        return not (self.norm_type == "BN" and self.norm.training)

    def residual_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """``Fres`` (MLP, VEncoder, norm, residual) of tokens ``(..., E) -> (..., Dv)``."""
        fp = self.mlp(tokens)  # (..., Dv)
        fbn = self.norm(self.vencoder(fp))  # (..., Dv)
        return fp + fbn if self.residual else fbn

    def map_residual_rows(
        self,
        features: torch.Tensor,
        row_map: RowMap | None = None,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    ) -> torch.Tensor:
        """``row_map(Fres)`` at every position, in chunks of positions when that is exact.

        Chunks keep the intermediates small (the FFN's ``4·Dv`` one stays cache-sized) and give
        the same per-position maps; they are used only when :meth:`chunking_allowed`.

        Args:
            features: ``(B, E, h, w)`` student features ``F``.
            row_map: per-position map of ``Fres`` rows ``(L, Dv) -> (L, K)``; it must treat rows
                independently (projection, cosine vs text, ...). None = identity (``K = Dv``).
            chunk_tokens: positions per chunk; 0 = one pass.

        Returns:
            ``(B, h, w, K)`` contiguous.
        """
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"CLIPSemanticHead expects features (B, {self.in_channels}, h, w); got "
                f"{tuple(features.shape)}"
            )
        chunk = chunk_tokens
        tokens = features.permute(0, 2, 3, 1)  # (B, h, w, E) channel-last view
        positions = tokens.shape[0] * tokens.shape[1] * tokens.shape[2]
        if chunk == 0 or positions <= chunk or not self.chunking_allowed():
            out = self.residual_rows(tokens.contiguous())  # (B, h, w, Dv)
            return out if row_map is None else row_map(out)
        rows = tokens.reshape(positions, -1)  # (L, E), one copy into channel-last rows
        first = self.residual_rows(rows[:chunk])  # (chunk, Dv)
        first = first if row_map is None else row_map(first)  # (chunk, K)
        out = first.new_empty(positions, first.shape[-1])  # (L, K)
        out[:chunk] = first
        for start in range(chunk, positions, chunk):
            part = self.residual_rows(rows[start : start + chunk])  # (<=chunk, Dv)
            out[start : start + chunk] = part if row_map is None else row_map(part)
        return out.view(*tokens.shape[:3], -1)  # (B, h, w, K)

    def forward(
        self, features: torch.Tensor, chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    ) -> torch.Tensor:
        """``Fc`` ``(B, D, h, w)`` (a channels-last view) of student features ``(B, E, h, w)``."""
        return self.map_residual_rows(features, self.proj, chunk_tokens).permute(0, 3, 1, 2)
