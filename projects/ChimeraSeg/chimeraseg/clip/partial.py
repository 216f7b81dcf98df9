"""Partial-CLIP modules: value path of CLIP's last visual blocks, ``visual.proj``, ``ln_post``.

These are the frozen pieces the CLIP Semantic Head (paper §III-B) re-uses per pixel. Every builder
returns a *copy* of CLIP's weights, so the copy can be frozen or trained independently of the
teacher, which keeps using the original CLIP.

Value path of one CLIP block (paper §III-B), applied token by token (no attention mixing)::

    x' = x + ls_1(out_proj(v_proj(ln_1(x))))     # v_proj = value third of attn.in_proj_*
    y  = x' + ls_2(mlp(ln_2(x')))

``ls_1``/``ls_2`` are LayerScale (identity in OpenAI CLIP). Query and key are dropped.

Both open_clip attention layouts are supported: ``nn.MultiheadAttention`` (sequence-first in old
open_clip, batch-first in new) and open_clip's own ``Attention``. The value path is per-token, so
the layout only matters to code that runs whole blocks (see :mod:`chimeraseg.clip.teacher`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BlockWeights",
    "ValueBlock",
    "VEncoder",
    "VisualProjection",
    "FrozenAwareLayerNorm",
    "extract_block_weights",
    "build_vencoder",
    "build_visual_projection",
    "build_ln_post",
    "fuse_value_projection",
]


@dataclass
class BlockWeights:
    """References (not copies) to the modules of one CLIP block that the value path needs.

    Attributes:
        ln_1: LayerNorm before attention, over ``Dv``.
        v_weight: ``(Dv, Dv)`` value projection (value third of ``attn.in_proj_weight``).
        v_bias: ``(Dv,)`` value bias, or None.
        out_proj: ``nn.Linear(Dv, Dv)`` attention output projection.
        ls_1: LayerScale after attention (``nn.Identity`` in OpenAI CLIP).
        ln_2: LayerNorm before the MLP.
        mlp: The block's MLP (``c_fc``, activation, ``c_proj``).
        ls_2: LayerScale after the MLP.
    """

    ln_1: nn.Module
    v_weight: torch.Tensor
    v_bias: torch.Tensor | None
    out_proj: nn.Linear
    ls_1: nn.Module
    ln_2: nn.Module
    mlp: nn.Module
    ls_2: nn.Module


def _check_plain_custom_attention(block: nn.Module, index: str) -> None:
    """Rejects open_clip ``Attention`` features whose value path is not v -> out_proj."""
    attn = block.attn
    unsupported = {
        "head_scale": getattr(attn, "head_scale", None) is not None,
        "ln_inner": not isinstance(getattr(attn, "ln_inner", nn.Identity()), nn.Identity),
        "ln_attn": not isinstance(getattr(block, "ln_attn", nn.Identity()), nn.Identity),
    }
    bad = [name for name, on in unsupported.items() if on]
    if bad:
        raise NotImplementedError(
            f"CLIP visual block {index}: attention features {bad} are not supported by the "
            "value path (only plain v -> out_proj, as in OpenAI CLIP)"
        )


def extract_block_weights(block: nn.Module, index: str = "?") -> BlockWeights:
    """Finds the value-path weights of one open_clip residual attention block.

    Args:
        block: ``ResidualAttentionBlock`` or ``CustomResidualAttentionBlock`` of open_clip.
        index: Block name used in error messages.

    Returns:
        References to the block's weights (shared storage, no copy).

    Raises:
        TypeError: If the block does not have open_clip's structure.
    """
    for attr in ("ln_1", "attn", "ln_2", "mlp"):
        if not hasattr(block, attr):
            raise TypeError(
                f"CLIP visual block {index} ({type(block).__name__}) has no '{attr}'; expected an "
                "open_clip ResidualAttentionBlock"
            )
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention):
        _check_plain_custom_attention(block, index)
    width = attn.out_proj.in_features
    in_w = getattr(attn, "in_proj_weight", None)
    if in_w is not None:
        v_weight = in_w[2 * width : 3 * width]  # rows: [q; k; v], each (Dv, Dv)
    elif getattr(attn, "v_proj_weight", None) is not None:
        v_weight = attn.v_proj_weight
    else:
        raise TypeError(f"CLIP visual block {index}: attention has no in_proj_weight/v_proj_weight")
    in_b = getattr(attn, "in_proj_bias", None)
    v_bias = in_b[2 * width : 3 * width] if in_b is not None else None
    return BlockWeights(
        ln_1=block.ln_1,
        v_weight=v_weight,
        v_bias=v_bias,
        out_proj=attn.out_proj,
        ls_1=getattr(block, "ls_1", nn.Identity()),
        ln_2=block.ln_2,
        mlp=block.mlp,
        ls_2=getattr(block, "ls_2", nn.Identity()),
    )


def _layer_scale_gamma(ls: nn.Module) -> torch.Tensor | None:
    """Returns the LayerScale vector ``(Dv,)`` or None for identity."""
    if isinstance(ls, nn.Identity):
        return None
    gamma = getattr(ls, "gamma", None)
    if gamma is None:
        raise TypeError(f"unsupported layer-scale module {type(ls).__name__} (no 'gamma')")
    return gamma


@torch.no_grad()
def tensor_cache_key(t: torch.Tensor | None) -> tuple | None:
    """Identity of a weight's current values, for caches of tensors derived from it.

    ``data_ptr`` catches ``.to()`` and loads into new storage, ``_version`` in-place updates.
    Inference tensors (weights created under ``torch.inference_mode``) have no version counter
    (reading it raises); they count as version 0, so an in-place edit of such weights inside
    inference mode is not detected.
    """
    if t is None:
        return None
    return (t.data_ptr(), 0 if t.is_inference() else t._version, t.dtype)


def fuse_value_projection(
    v_weight: torch.Tensor,
    v_bias: torch.Tensor | None,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor | None,
    gamma: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Folds ``ls(out_proj(v_proj(x)))`` into one affine map ``x @ W.T + b`` (exact up to rounding).

    Args:
        v_weight: ``(Dv, Dv)`` value weight.
        v_bias: ``(Dv,)`` or None.
        out_weight: ``(Dv, Dv)`` out_proj weight.
        out_bias: ``(Dv,)`` or None.
        gamma: ``(Dv,)`` LayerScale, or None.

    Returns:
        ``W (Dv, Dv)`` and ``b (Dv,)`` with ``W = diag(gamma) Wo Wv`` and
        ``b = gamma * (Wo bv + bo)``.
    """
    weight = out_weight @ v_weight
    bias = torch.zeros_like(weight[:, 0])
    if v_bias is not None:
        bias = bias + out_weight @ v_bias
    if out_bias is not None:
        bias = bias + out_bias
    if gamma is not None:
        weight = gamma[:, None] * weight
        bias = gamma * bias
    return weight, bias


def _set_trainable(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


class ValueBlock(nn.Module):
    """Value path of one CLIP block, on channel-last tokens ``(..., Dv)``.

    Args:
        weights: The source block's weights; they are copied.
        use_value: Keep the ``ln_1 -> v -> out_proj`` residual branch.
        use_ffn: Keep the ``ln_2 -> mlp`` residual branch.
        trainable_value: Train ``ln_1``, ``v_proj``, ``out_proj`` (and ``ls_1``).
        trainable_ffn: Train ``ln_2``, ``mlp`` (and ``ls_2``).
    """

    def __init__(
        self,
        weights: BlockWeights,
        *,
        use_value: bool = True,
        use_ffn: bool = True,
        trainable_value: bool = False,
        trainable_ffn: bool = False,
    ) -> None:
        super().__init__()
        width = weights.out_proj.in_features
        self.width = width
        self.use_value = use_value
        self.use_ffn = use_ffn
        self.trainable_value = trainable_value
        self.trainable_ffn = trainable_ffn
        if use_value:
            self.ln_1 = copy.deepcopy(weights.ln_1)
            self.v_proj = nn.Linear(width, width, bias=weights.v_bias is not None)
            with torch.no_grad():
                self.v_proj.weight.copy_(weights.v_weight)
                if weights.v_bias is not None:
                    self.v_proj.bias.copy_(weights.v_bias)
            self.out_proj = nn.Linear(width, width, bias=weights.out_proj.bias is not None)
            self.out_proj.load_state_dict(weights.out_proj.state_dict())
            self.ls_1 = copy.deepcopy(weights.ls_1)
            for name in ("ln_1", "v_proj", "out_proj", "ls_1"):
                _set_trainable(getattr(self, name), trainable_value)
        if use_ffn:
            self.ln_2 = copy.deepcopy(weights.ln_2)
            self.mlp = copy.deepcopy(weights.mlp)
            self.ls_2 = copy.deepcopy(weights.ls_2)
            for name in ("ln_2", "mlp", "ls_2"):
                _set_trainable(getattr(self, name), trainable_ffn)
        self._fused_key: tuple | None = None
        self._fused: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fused_value(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the folded frozen value map, recomputed when any source weight changed."""
        gamma = _layer_scale_gamma(self.ls_1)
        sources = [self.v_proj.weight, self.v_proj.bias, self.out_proj.weight, self.out_proj.bias]
        sources.append(gamma)
        key = tuple(tensor_cache_key(t) for t in sources)
        if self._fused is None or key != self._fused_key:
            # Computed outside inference mode so that a cache filled during evaluation remains
            # usable by later training forwards (inference tensors cannot be saved for backward),
            # and outside autocast so that it keeps the weights' dtype (an AMP training step must
            # not leave a bfloat16 map for float32 evaluation).
            no_autocast = torch.autocast(self.v_proj.weight.device.type, enabled=False)
            with torch.inference_mode(False), torch.no_grad(), no_autocast:
                self._fused = fuse_value_projection(*sources)
            self._fused_key = key
        return self._fused

    def value_branch(self, x: torch.Tensor) -> torch.Tensor:
        """``ls_1(out_proj(v_proj(ln_1(x))))`` for ``x (..., Dv)``, without the residual."""
        h = self.ln_1(x)
        value_params = (*self.v_proj.parameters(), *self.out_proj.parameters())
        if any(p.requires_grad for p in (*value_params, *self.ls_1.parameters())):
            return self.ls_1(self.out_proj(self.v_proj(h)))  # unfused: gradients reach weights
        weight, bias = self._fused_value()
        return F.linear(h, weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block's value path.

        Args:
            x: ``(..., Dv)`` tokens, any leading shape.

        Returns:
            ``(..., Dv)``.
        """
        if self.use_value:
            x = x + self.value_branch(x)
        if self.use_ffn:
            x = x + self.ls_2(self.mlp(self.ln_2(x)))
        return x

    def train(self, mode: bool = True) -> ValueBlock:
        """Sets train mode on trainable parts only; frozen parts stay in eval mode."""
        super().train(mode)
        for child in self.children():
            if not any(p.requires_grad for p in child.parameters()):
                child.eval()
        return self


class VEncoder(nn.Module):
    """The last ``num_blocks`` CLIP visual blocks' value paths, applied in order.

    Attributes:
        width: ``Dv``, the CLIP visual width.
        num_blocks: Number of blocks (0 means identity).
        blocks: ``nn.ModuleList`` of :class:`ValueBlock`.
    """

    def __init__(self, blocks: list[ValueBlock], width: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.width = width
        self.num_blocks = len(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the value paths token by token (no attention mixing).

        Args:
            x: ``(..., Dv)`` channel-last features, e.g. ``(N, Dv)`` or ``(B, h, w, Dv)``.

        Returns:
            ``(..., Dv)``; ``x`` itself when ``num_blocks == 0``.
        """
        if x.shape[-1] != self.width:
            raise ValueError(
                f"VEncoder expects channel-last input (..., {self.width}); got {tuple(x.shape)}"
            )
        for block in self.blocks:
            x = block(x)
        return x


def _resblocks(clip_visual: nn.Module) -> nn.ModuleList:
    transformer = getattr(clip_visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None:
        raise TypeError(
            f"{type(clip_visual).__name__} has no transformer.resblocks; expected an open_clip "
            "VisionTransformer (CLIP.visual)"
        )
    return blocks


def build_vencoder(
    clip_visual: nn.Module,
    num_blocks: int = 1,
    use_value: bool = True,
    use_ffn: bool = True,
    trainable_value: bool = False,
    trainable_ffn: bool = False,
) -> VEncoder:
    """Builds the VEncoder (paper §III-B) from copies of CLIP's last ``num_blocks`` visual blocks.

    Frozen value paths are folded into one ``(Dv, Dv)`` matrix and bias (exact up to float error),
    refreshed whenever the copied weights change.

    Args:
        clip_visual: ``CLIP.visual`` (open_clip ``VisionTransformer``).
        num_blocks: How many of the last blocks to use, in their original order; 0 is identity.
        use_value: Keep the value branch (residual kept either way).
        use_ffn: Keep the FFN branch (residual kept either way).
        trainable_value: Make ``ln_1``/``v_proj``/``out_proj`` trainable.
        trainable_ffn: Make ``ln_2``/``mlp`` trainable.

    Returns:
        :class:`VEncoder` mapping ``(..., Dv) -> (..., Dv)``.

    Raises:
        ValueError: If ``num_blocks`` is negative or larger than the number of CLIP blocks.
    """
    resblocks = _resblocks(clip_visual)
    if not 0 <= num_blocks <= len(resblocks):
        raise ValueError(
            f"num_blocks={num_blocks} is out of range: CLIP visual has {len(resblocks)} blocks"
        )
    width = resblocks[0].ln_1.normalized_shape[0]
    first = len(resblocks) - num_blocks
    blocks = [
        ValueBlock(
            extract_block_weights(resblocks[i], index=str(i)),
            use_value=use_value,
            use_ffn=use_ffn,
            trainable_value=trainable_value,
            trainable_ffn=trainable_ffn,
        )
        for i in range(first, len(resblocks))
    ]
    return VEncoder(blocks, width)


class VisualProjection(nn.Module):
    """CLIP's ``visual.proj``: ``(..., Dv) -> (..., D)`` as ``x @ weight``.

    Attributes:
        weight: ``(Dv, D)`` parameter.
        width: ``Dv``.
        embed_dim: ``D``.
    """

    def __init__(self, weight: torch.Tensor, trainable: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=trainable)
        self.width, self.embed_dim = weight.shape

    def reset_parameters_he(self) -> None:
        """Re-initialises ``weight`` with He (Kaiming) normal init, fan-in ``Dv`` (Table V)."""
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(2.0 / self.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projects ``x (..., Dv)`` to ``(..., D)``."""
        return x @ self.weight

    def train(self, mode: bool = True) -> VisualProjection:
        """Stays in eval mode when frozen."""
        return super().train(mode and self.weight.requires_grad)


class FrozenAwareLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that stays in eval mode while its parameters are frozen.

    Attributes:
        width: Normalised size (``Dv`` for ``ln_post``).
    """

    def train(self, mode: bool = True) -> FrozenAwareLayerNorm:
        """Stays in eval mode when frozen."""
        return super().train(mode and any(p.requires_grad for p in self.parameters()))


def build_visual_projection(clip_visual: nn.Module, trainable: bool = False) -> VisualProjection:
    """Copies ``clip_visual.proj`` into a :class:`VisualProjection`.

    Args:
        clip_visual: ``CLIP.visual`` with a ``proj`` parameter ``(Dv, D)``.
        trainable: Whether the copy receives gradients.

    Returns:
        :class:`VisualProjection` mapping ``(..., Dv) -> (..., D)``.
    """
    proj = getattr(clip_visual, "proj", None)
    if not isinstance(proj, torch.Tensor) or proj.ndim != 2:
        raise TypeError(f"{type(clip_visual).__name__}.proj must be a (Dv, D) tensor, got {proj!r}")
    return VisualProjection(proj, trainable=trainable)


def build_ln_post(clip_visual: nn.Module, trainable: bool = False) -> FrozenAwareLayerNorm:
    """Copies ``clip_visual.ln_post`` (LayerNorm over ``Dv``).

    Args:
        clip_visual: ``CLIP.visual`` with ``ln_post``.
        trainable: Whether the copy receives gradients.

    Returns:
        A LayerNorm ``(..., Dv) -> (..., Dv)`` with CLIP's weight, bias and eps.
    """
    src = getattr(clip_visual, "ln_post", None)
    if not isinstance(src, nn.LayerNorm):
        raise TypeError(f"{type(clip_visual).__name__}.ln_post must be a LayerNorm, got {src!r}")
    ln = FrozenAwareLayerNorm(
        src.normalized_shape, eps=src.eps, elementwise_affine=src.elementwise_affine
    )
    if src.elementwise_affine:
        ln.load_state_dict(src.state_dict())
        ln.to(device=src.weight.device, dtype=src.weight.dtype)
    ln.width = src.normalized_shape[0]
    _set_trainable(ln, trainable)
    return ln
