"""CLIP Semantic Head (CSH, paper §III-B and Fig. 3).

Per pixel, on channel-last tokens (contiguous GEMMs, no per-layer permutes)::

    Fp   = MLP(F)                  trainable, E -> Dv (1 layer, or Linear-GELU-Linear)
    Fv   = VEncoder(Fp)            frozen value path of CLIP's last block(s)
    Fbn  = Norm(Fv)                BN (default) | GN | LN_clip (frozen ln_post) | LN | none
    Fres = Fp + Fbn                (Fbn when residual=False)
    Fc   = Fres @ proj             CLIP visual.proj, Dv -> D (frozen | learnable | he)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.clip.partial import build_ln_post, build_vencoder, build_visual_projection

__all__ = [
    "CLIPSemanticHead",
    "ChannelLastBatchNorm",
    "ChannelLastGroupNorm",
    "DEFAULT_CHUNK_TOKENS",
    "RowFn",
    "fold_projection",
    "folded_cosine_logits",
    "folded_cosine_rows",
]

DEFAULT_CHUNK_TOKENS = 1024  # positions per CSH chunk at inference (FFN intermediate ~12 MB)

# Maps ``Fres`` rows ``(..., Dv)`` to per-position outputs ``(..., K)`` (any leading shape).
RowFn = Callable[[torch.Tensor], torch.Tensor]

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
        mlp_layers: 1 (Linear E->Dv) or 2 (Linear E->Dv, GELU, Linear Dv->Dv).
        vencoder_blocks: number of last CLIP blocks in the VEncoder (0 = none, Table VIII).
        use_value: keep the VEncoder value branch (Table VI).
        use_ffn: keep the VEncoder FFN branch (Table VI).
        trainable_value: train the value branch (Table VII).
        trainable_ffn: train the FFN branch (Table VII).
        norm: ``"BN" | "GN" | "LN_clip" | "LN" | "none"`` (Table IX).
        residual: ``Fres = Fp + Fbn`` (else ``Fbn``) (Table IV).
        proj: ``"frozen"`` CLIP copy, ``"learnable"`` CLIP init, ``"he"`` Kaiming init (Table V).
        chunk_tokens: when no gradient is recorded (``torch.no_grad``/``inference_mode``) and the
            norm is per-position (BN in eval mode, LN, LN_clip, none), run the head over chunks
            of this many positions (exact: the same per-position maps, smaller intermediates;
            the FFN's ``4·Dv`` intermediate stays cache-sized). 0 disables chunking. Never
            chunks in training or with GN (their statistics span all positions).
    """

    def __init__(
        self,
        in_channels: int,
        clip_visual: nn.Module,
        *,
        mlp_layers: int = 1,
        vencoder_blocks: int = 1,
        use_value: bool = True,
        use_ffn: bool = True,
        trainable_value: bool = False,
        trainable_ffn: bool = False,
        norm: str = "BN",
        residual: bool = True,
        proj: str = "frozen",
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    ) -> None:
        super().__init__()
        if norm not in NORM_TYPES:
            raise ValueError(f"CLIPSemanticHead: norm={norm!r} is not one of {NORM_TYPES}")
        if proj not in PROJ_TYPES:
            raise ValueError(f"CLIPSemanticHead: proj={proj!r} is not one of {PROJ_TYPES}")
        if mlp_layers not in (1, 2):
            raise ValueError(f"CLIPSemanticHead: mlp_layers={mlp_layers} must be 1 or 2")
        _check_chunk_tokens(chunk_tokens)
        self.vencoder = build_vencoder(
            clip_visual,
            num_blocks=vencoder_blocks,
            use_value=use_value,
            use_ffn=use_ffn,
            trainable_value=trainable_value,
            trainable_ffn=trainable_ffn,
        )
        width = self.vencoder.width
        if norm == "GN" and width % 32 != 0:
            raise ValueError(f"CLIPSemanticHead: norm='GN' needs Dv % 32 == 0; Dv = {width}")
        layers: list[nn.Module] = [nn.Linear(in_channels, width)]
        if mlp_layers == 2:
            layers += [nn.GELU(), nn.Linear(width, width)]
        self.mlp = nn.Sequential(*layers)
        self.norm = _build_norm(norm, clip_visual, width)
        self.proj = build_visual_projection(clip_visual, trainable=proj != "frozen")
        if proj == "he":
            self.proj.reset_parameters_he()
        self.in_channels = in_channels
        self.width = width
        self.embed_dim = self.proj.embed_dim
        self.residual = residual
        self.norm_type = norm
        self.proj_type = proj
        self.chunk_tokens = chunk_tokens

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
        super().train(mode)
        for module in self.frozen_clip_modules().values():
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

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

    def map_positions(
        self,
        features: torch.Tensor,
        row_fn: RowFn | None = None,
        chunk_tokens: int | None = None,
    ) -> torch.Tensor:
        """``row_fn(Fres)`` at every position, in chunks of positions when that is exact.

        Args:
            features: ``(B, E, h, w)`` student features ``F``.
            row_fn: per-position map of ``Fres`` rows ``(L, Dv) -> (L, K)``; it must treat rows
                independently (projection, cosine vs text, ...). None = identity (``K = Dv``).
            chunk_tokens: positions per chunk; None = ``self.chunk_tokens``; 0 = one pass.
                Used only when :meth:`chunking_allowed`.

        Returns:
            ``(B, h, w, K)`` contiguous.
        """
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"CLIPSemanticHead expects features (B, {self.in_channels}, h, w); got "
                f"{tuple(features.shape)}"
            )
        chunk = self.chunk_tokens if chunk_tokens is None else chunk_tokens
        _check_chunk_tokens(chunk)
        tokens = features.permute(0, 2, 3, 1)  # (B, h, w, E) channel-last view
        positions = tokens.shape[0] * tokens.shape[1] * tokens.shape[2]
        if chunk == 0 or positions <= chunk or not self.chunking_allowed():
            out = self.residual_rows(tokens.contiguous())  # (B, h, w, Dv)
            return out if row_fn is None else row_fn(out)
        rows = tokens.reshape(positions, -1)  # (L, E), one copy into channel-last rows
        first = self.residual_rows(rows[:chunk])  # (chunk, Dv)
        first = first if row_fn is None else row_fn(first)  # (chunk, K)
        out = first.new_empty(positions, first.shape[-1])  # (L, K)
        out[:chunk] = first
        for start in range(chunk, positions, chunk):
            part = self.residual_rows(rows[start : start + chunk])  # (<=chunk, Dv)
            out[start : start + chunk] = part if row_fn is None else row_fn(part)
        return out.view(*tokens.shape[:3], -1)  # (B, h, w, K)

    def residual_tokens(
        self, features: torch.Tensor, chunk_tokens: int | None = None
    ) -> torch.Tensor:
        """``Fres`` on channel-last tokens.

        Args:
            features: ``(B, E, h, w)`` student features ``F``.
            chunk_tokens: see :meth:`map_positions` (None = ``self.chunk_tokens``).

        Returns:
            ``(B, h, w, Dv)`` contiguous ``Fres`` (before ``proj``).
        """
        return self.map_positions(features, None, chunk_tokens)

    def forward_tokens(
        self, features: torch.Tensor, chunk_tokens: int | None = None
    ) -> torch.Tensor:
        """``Fc`` channel-last ``(B, E, h, w) -> (B, h, w, D)``, chunked as in ``map_positions``."""
        return self.map_positions(features, self.proj, chunk_tokens)

    def forward(self, features: torch.Tensor, chunk_tokens: int | None = None) -> torch.Tensor:
        """Maps student features to CLIP-bridged features.

        Args:
            features: ``(B, E, h, w)`` student features ``F``.
            chunk_tokens: see :meth:`map_positions` (None = ``self.chunk_tokens``).

        Returns:
            ``(B, D, h, w)`` ``Fc`` (a channels-last strided view of the token tensor).
        """
        return self.forward_tokens(features, chunk_tokens).permute(0, 3, 1, 2)  # (B, D, h, w)


def _check_chunk_tokens(chunk_tokens: int) -> None:
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 0:
        raise ValueError(
            f"CLIPSemanticHead: chunk_tokens={chunk_tokens!r} must be an int >= 0 (0 = no chunking)"
        )


def fold_projection(text: torch.Tensor, proj_weight: torch.Tensor) -> torch.Tensor:
    """Folds the CLIP projection into unit text embeddings: ``P · Âᵀ``.

    With ``Fc = Fres · P``, ``Fc · Âᵀ = Fres · (P · Âᵀ)``; the cosine additionally needs
    ``‖Fc‖ = sqrt(rowsum((Fres · G) ⊙ Fres))`` with the Gram matrix ``G = P · Pᵀ``
    (see :func:`folded_cosine_logits`).

    Cost per pixel (multiply-adds), ``Dv = 768``, ``D = 512``, ``N`` classes:
    unfolded ``Dv·D + D·N`` (projection, then text GEMM); folded ``Dv·N + Dv·Dv`` (folded text
    GEMM plus the Gram norm). Since ``‖Fc‖`` needs a rank-``D`` map of ``Fres`` whatever is
    folded, the folded path never saves work when ``Dv >= D`` (ViT-B/16: 768·(N + 768) vs
    512·(N + 768), i.e. 1.5x more). Only argmax-without-bias consumers could skip the norm
    (it is a positive per-pixel scale), but the γ calibration breaks that invariance. Hence the
    unfolded path is the default and folding is an exact, tested alternative.

    Args:
        text: ``(N, D)`` text embeddings (normalised here).
        proj_weight: ``(Dv, D)`` projection ``P``.

    Returns:
        ``(Dv, N)`` folded classifier.
    """
    return proj_weight @ F.normalize(text, dim=-1).t()  # (Dv, D) @ (D, N)


def folded_cosine_rows(
    residual: torch.Tensor, folded: torch.Tensor, gram: torch.Tensor, tau: float
) -> torch.Tensor:
    """``cos(Fres·P, A)/τ`` per position, channel-last: ``(..., Dv) -> (..., N)``.

    Args:
        residual: ``(..., Dv)`` ``Fres`` tokens.
        folded: ``(Dv, N)`` from :func:`fold_projection`.
        gram: ``(Dv, Dv)`` ``P · Pᵀ``.
        tau: temperature.

    Returns:
        ``(..., N)`` logits.
    """
    dots = residual @ folded  # (..., N) = Fc · Âᵀ
    sq_norm = ((residual @ gram) * residual).sum(-1, keepdim=True)  # (..., 1) = ‖Fc‖²
    norm = sq_norm.clamp_min(1e-24).sqrt().clamp_min(1e-12)  # same eps as F.normalize
    return dots / norm / tau


def folded_cosine_logits(
    residual: torch.Tensor, folded: torch.Tensor, gram: torch.Tensor, tau: float
) -> torch.Tensor:
    """``cos(Fres·P, A)/τ`` from the folded classifier, without forming ``Fc``.

    Args:
        residual: ``(B, h, w, Dv)`` ``Fres`` tokens.
        folded: ``(Dv, N)`` from :func:`fold_projection`.
        gram: ``(Dv, Dv)`` ``P · Pᵀ``.
        tau: temperature.

    Returns:
        ``(B, N, h, w)`` logits.
    """
    return folded_cosine_rows(residual, folded, gram, tau).permute(0, 3, 1, 2)  # (B, N, h, w)
